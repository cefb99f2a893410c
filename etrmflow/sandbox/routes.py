"""The sandbox's data routes: one trade endpoint per pagination style, settlements filtered by
date, and an idempotent POST. Every trade endpoint serves the same dataset, records
``0 .. trades - 1`` in order, so a client can prove a paginator walks it exactly once."""

from __future__ import annotations

import base64
import binascii
from array import array
from functools import lru_cache
from typing import Any

from aiohttp import web

from etrmflow.sandbox.data import settlement, settlement_date, trade
from etrmflow.sandbox.instructions import add_instruction_routes
from etrmflow.sandbox.responses import (
    ApiError,
    FragmentCache,
    date_param,
    int_param,
    json_response,
    size_param,
)
from etrmflow.sandbox.state import STATE_KEY, SandboxState


def _state(request: web.Request) -> SandboxState:
    return request.app[STATE_KEY]


TRADE_PAGES = FragmentCache(limit=64 * 2**20)
"""Pages of trades already served, as JSON: records are a function of (seed, index), so a page
is the same whenever it is asked for again. 64 MiB (about 130,000 trades) keeps an in-process
sandbox small; a standalone one may raise ``TRADE_PAGES.limit`` (benchmarks do)."""


def _trades(request: web.Request, start: int, count: int) -> Any:
    """Trades ``start`` to ``start + count`` (fewer at the end), as a JSON fragment."""
    state = _state(request)
    seed, stop = state.config.seed, min(start + count, state.config.trades)
    state.stats.records_served += max(0, stop - start)
    return TRADE_PAGES.get((seed, start, stop), lambda: [trade(i, seed) for i in range(start, stop)])


def _page_window(request: web.Request, size_name: str) -> tuple[int, int, int]:
    """(page, page_size, total_pages) of a page-number request; pages start at 1."""
    config = _state(request).config
    page = int_param(request, "page", 1, minimum=1)
    size = size_param(request, size_name, config.max_page_size)
    return page, size, -(-config.trades // size)


# --- cursor ------------------------------------------------------------------------------------

def _encode_cursor(seed: int, offset: int) -> str:
    return base64.urlsafe_b64encode(b"%d:%d" % (seed, offset)).decode().rstrip("=")


def _decode_cursor(cursor: str, seed: int, total: int) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        cursor_seed, offset = (int(part) for part in text.split(":"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_cursor", message=f"unknown cursor {cursor!r}") from None
    if cursor_seed != seed or not 0 < offset < total:
        raise ApiError(400, "invalid_cursor", message=f"unknown cursor {cursor!r}")
    return offset


async def trades_cursor(request: web.Request) -> web.Response:
    config = _state(request).config
    size = size_param(request, "limit", config.max_page_size)
    cursor = request.query.get("cursor")
    offset = _decode_cursor(cursor, config.seed, config.trades) if cursor else 0
    end = offset + size
    next_cursor = _encode_cursor(config.seed, end) if end < config.trades else None
    return json_response({"trades": _trades(request, offset, size), "next_cursor": next_cursor})


# --- page number, offset, links ----------------------------------------------------------------

async def trades_pages(request: web.Request) -> web.Response:
    page, size, total_pages = _page_window(request, "page_size")
    return json_response({"data": _trades(request, (page - 1) * size, size), "page": page,
                          "page_size": size, "total_pages": total_pages, "next_page": page < total_pages})


async def trades_offset(request: web.Request) -> web.Response:
    config = _state(request).config
    offset = int_param(request, "offset", 0, minimum=0)
    limit = size_param(request, "limit", config.max_page_size)
    # The total comes as a string: a real vendor's quirk the offset paginator must survive.
    return json_response({"items": _trades(request, offset, limit), "offset": offset, "limit": limit,
                          "total": str(config.trades)})


async def trades_links(request: web.Request) -> web.Response:
    page, size, total_pages = _page_window(request, "page_size")
    links = [{"rel": "self", "href": str(request.url)}]
    if page < total_pages:
        links.append({"rel": "next", "href": str(request.url.update_query(page=page + 1))})
    return json_response({"trades": _trades(request, (page - 1) * size, size), "links": links})


async def trades_link_header(request: web.Request) -> web.Response:
    page, size, total_pages = _page_window(request, "per_page")
    headers = {}
    if page < total_pages:
        headers["Link"] = f'<{request.url.update_query(page=page + 1)}>; rel="next"'
    return json_response(_trades(request, (page - 1) * size, size), headers=headers)


# --- settlements -------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _settlement_days(seed: int, count: int) -> array:
    """Every settlement's true date as an int ``YYYYMMDD``, computed once per dataset."""
    return array("l", (int(settlement_date(i, seed).replace("-", "")) for i in range(count)))


@lru_cache(maxsize=32)
def _settlements_in(seed: int, count: int, start: str | None, end: str | None) -> array:
    if start is None and end is None:
        return array("l", range(count))
    low = int(start.replace("-", "")) if start else 0
    high = int(end.replace("-", "")) if end else 99_999_999
    days = _settlement_days(seed, count)
    return array("l", (i for i in range(count) if low <= days[i] < high))


async def settlements(request: web.Request) -> web.Response:
    state = _state(request)
    config = state.config
    start, end = date_param(request, "start_date"), date_param(request, "end_date")
    page = int_param(request, "page", 1, minimum=1)
    size = size_param(request, "page_size", config.max_page_size)
    matching = _settlements_in(config.seed, config.settlements, start, end)
    total_pages = -(-len(matching) // size)
    results = [settlement(i, config.seed) for i in matching[(page - 1) * size:page * size]]
    state.stats.records_served += len(results)
    return json_response({"results": results, "page": page, "page_size": size,
                          "total_pages": total_pages, "next_page": page < total_pages})


def add_data_routes(app: web.Application) -> None:
    app.router.add_get("/api/v2/trades", trades_cursor)
    app.router.add_get("/api/v2/trades/pages", trades_pages)
    app.router.add_get("/api/v2/trades/offset", trades_offset)
    app.router.add_get("/api/v2/trades/links", trades_links)
    app.router.add_get("/api/v2/trades/link-header", trades_link_header)
    app.router.add_get("/public/v1/trades", trades_pages)
    app.router.add_get("/api/v2/settlements", settlements)
    add_instruction_routes(app)
