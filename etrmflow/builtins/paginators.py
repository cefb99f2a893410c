"""Built-in paginators: pure state machines from (request, response, records) to the next request.

A paginator never stops silently on a response that contradicts itself: a cursor or link seen
before, a walk past ``max_pages``, or a short page before a known total are PaginationErrors.
(A page the vendor sends twice, whatever the paginator, is refused where pages are committed:
see ``etrmflow.engine.resume.RepeatGuard``.)
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

from etrmflow import hookimpl
from etrmflow.components import Paginator, Request, Response
from etrmflow.errors import PaginationError
from etrmflow.jsonpath import MISSING, compile_path, extract

_PATH = {"type": "string", "pattern": "^\\$", "description": "JSON path into the response body, e.g. $.next_cursor"}
_MAX_PAGES = {"type": "integer", "minimum": 1,
              "description": "Fail (never stop silently) if the walk goes past this many pages (default 100000)."}
_PARAM = {"type": "string", "minLength": 1}


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required or [],
            "properties": {**properties, "max_pages": _MAX_PAGES}}


class _Walk(Paginator):
    """Shared page counting and the max_pages guard."""

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.max_pages: int = options.get("max_pages", 100_000)
        self.pages = 0

    def next(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        self.pages += 1
        following = self.follow(request, response, records)
        # Checked only when another page would be fetched: a walk of exactly max_pages is fine.
        if following is not None and self.pages >= self.max_pages:
            raise PaginationError(f"{self.type_name} paginator walked {self.pages} pages without reaching "
                                  f"the end (max_pages: {self.max_pages}); raise max_pages if this is expected")
        return following

    def follow(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        """The request for the page after this one, or None at the end."""
        raise NotImplementedError


def _truthy(flag: Any) -> bool:
    """A has-more flag; vendors send booleans, 0/1 or the strings "true"/"false"."""
    if isinstance(flag, str):
        return flag.strip().lower() in ("true", "1", "yes")
    return bool(flag)


def _resumed_short(where: str, unit: str) -> str:
    """A resumed walk's first request, past the start, answered no_data. This walk has seen no
    count yet, but the page before the resume point had one: the walk asks for a page past the
    start only while that count says more follow, so the vendor promised this one."""
    return (f"{where} answered with a no_data response rule, but the page before it (read before the run was "
            f"resumed) reported more {unit}: refusing to end the walk short (if the vendor now has fewer, "
            f"run without --resume to start over)")


def _number(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PaginationError(f"{what} should be a number, got {value!r}") from None


class SinglePage(Paginator):
    """No pagination: one request, one page.

    Example::

        paginator: {type: single}
    """

    type_name: ClassVar[str] = "single"
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}

    def next(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        return None


class PageNumber(_Walk):
    """Page numbers: stops on a has-more flag, a total page count, or an empty page.

    Example::

        paginator:
          type: page_number
          param: page            # query parameter carrying the page number
          start: 1
          has_more: $.next_page  # or total_pages: $.total_pages; neither: stop at an empty page
    """

    type_name: ClassVar[str] = "page_number"
    options_schema: ClassVar[dict[str, Any]] = _schema({
        "param": {**_PARAM, "description": "Query parameter for the page number (default page)."},
        "start": {"type": "integer", "description": "First page number (default 1)."},
        "has_more": {**_PATH, "description": "Path to a flag that is true while more pages follow."},
        "total_pages": {**_PATH, "description": "Path to the total number of pages."},
    })

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.param = options.get("param", "page")
        self.start = options.get("start", 1)
        self.has_more = compile_path(options["has_more"]) if "has_more" in options else None
        self.total_pages = compile_path(options["total_pages"]) if "total_pages" in options else None
        self.announced: tuple[int, Any] | None = None
        """(last page number, total as sent) from the latest total_pages the vendor sent."""

    def first(self, request: Request) -> Request:
        request.params[self.param] = self.start
        return request

    def follow(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        page = request.params[self.param]
        if not self._more(page, response, records):
            return None
        following = request.copy()
        following.params[self.param] = page + 1
        return following

    def _more(self, page: int, response: Response, records: list[Any]) -> bool:
        if self.has_more is not None:
            flag = extract(response.body, self.has_more)
            if flag is MISSING:
                raise PaginationError(f"has_more path {self.options['has_more']} not found in the response")
            return _truthy(flag) and (bool(records) or self._empty_page_with_more())
        if self.total_pages is not None:
            total = extract(response.body, self.total_pages)
            if total is MISSING:
                raise PaginationError(f"total_pages path {self.options['total_pages']} not found in the response")
            last = _number(total, "total_pages") + self.start - 1
            self.announced = (last, total)
            if page < last and not records:
                raise PaginationError(f"page {page} is empty but the vendor reports {total} pages")
            return page < last
        return bool(records)

    def _empty_page_with_more(self) -> bool:
        raise PaginationError("an empty page says more pages follow: refusing to loop")

    def no_data(self, request: Request) -> None:
        # A has_more flag is often only "this page was full", so no_data after it is the empty
        # last page; a page count is a promise, and ending before it would lose pages.
        page = _number(request.params[self.param], "the page number")
        if self.announced is not None and page <= self.announced[0]:
            raise PaginationError(f"page {page} answered with a no_data response rule but the vendor reported "
                                  f"{self.announced[1]} pages: refusing to end the walk short")
        if self.announced is None and self.total_pages is not None and page > self.start:
            raise PaginationError(_resumed_short(f"page {page}", "pages"))


class Offset(_Walk):
    """Offset and limit: advances by the records received; stops at the total or an empty page.

    Example::

        paginator:
          type: offset
          offset_param: offset
          limit_param: limit
          limit: 500
          total: $.total         # may be a number or a numeric string
    """

    type_name: ClassVar[str] = "offset"
    options_schema: ClassVar[dict[str, Any]] = _schema({
        "offset_param": {**_PARAM, "description": "Query parameter for the offset (default offset)."},
        "limit_param": {**_PARAM, "description": "Query parameter for the page size (default limit)."},
        "limit": {"type": "integer", "minimum": 1, "description": "Page size (default 100)."},
        "start": {"type": "integer", "minimum": 0, "description": "First offset (default 0)."},
        "total": {**_PATH, "description": "Path to the total record count; without it, stop at an empty page."},
    })

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.offset_param = options.get("offset_param", "offset")
        self.limit_param = options.get("limit_param", "limit")
        self.limit = options.get("limit", 100)
        self.start = options.get("start", 0)
        self.total = compile_path(options["total"]) if "total" in options else None
        self.announced: int | None = None
        """The latest total record count the vendor sent."""

    def first(self, request: Request) -> Request:
        request.params[self.offset_param] = self.start
        request.params[self.limit_param] = self.limit
        return request

    def follow(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        reached = request.params[self.offset_param] + len(records)
        if self.total is not None:
            total = extract(response.body, self.total)
            if total is MISSING:
                raise PaginationError(f"total path {self.options['total']} not found in the response")
            total_count = self.announced = _number(total, "total")
            if reached >= total_count:
                return None
            if not records:
                raise PaginationError(f"empty page at offset {reached} but the vendor reports {total_count} records")
        elif not records:
            return None
        following = request.copy()
        following.params[self.offset_param] = reached
        return following

    def no_data(self, request: Request) -> None:
        offset = _number(request.params[self.offset_param], "the offset")
        if self.announced is not None and offset < self.announced:
            raise PaginationError(f"offset {offset} answered with a no_data response rule but the vendor reported "
                                  f"{self.announced} records: refusing to end the walk short")
        if self.announced is None and self.total is not None and offset > self.start:
            raise PaginationError(_resumed_short(f"offset {offset}", "records"))


class Cursor(_Walk):
    """A cursor from the response body, sent back as a query parameter until it is empty.

    Example::

        paginator: {type: cursor, cursor: $.next_cursor, param: cursor}
    """

    type_name: ClassVar[str] = "cursor"
    options_schema: ClassVar[dict[str, Any]] = _schema({
        "cursor": {**_PATH, "description": "Path to the next cursor; null, empty or absent ends the walk."},
        "param": {**_PARAM, "description": "Query parameter to send it in (default cursor)."},
    }, required=["cursor"])

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.cursor = compile_path(options["cursor"])
        self.param = options.get("param", "cursor")
        self.seen: set[str] = set()

    def template_context(self, request: Request) -> dict[str, Any]:
        return {"cursor": request.params.get(self.param)}

    def follow(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        cursor = extract(response.body, self.cursor)
        if cursor is MISSING or cursor is None or cursor == "":
            return None
        cursor = _vendor_text(str(cursor), "cursor")
        if cursor in self.seen:
            raise PaginationError(f"cursor {cursor[:40]!r} was already seen in this walk: the vendor is looping")
        self.seen.add(cursor)
        following = request.copy()
        following.params[self.param] = cursor
        return following


class NextLink(_Walk):
    """Follows a next link: from the body (a URL, or a list of {rel, href}) or the Link header.

    Example::

        paginator: {type: next_link, in: body, path: $.links}   # or: {type: next_link, in: header}
    """

    type_name: ClassVar[str] = "next_link"
    options_schema: ClassVar[dict[str, Any]] = _schema({
        "in": {"enum": ["body", "header"], "description": "Where the link is (default body)."},
        "path": {**_PATH, "description": "Body path to the URL or to a list of {rel, href} (default $.next)."},
        "rel": {"type": "string", "description": "Link relation to follow (default next)."},
    })

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.where = options.get("in", "body")
        self.path = compile_path(options.get("path", "$.next"))
        self.rel = options.get("rel", "next")
        self.seen: set[str] = set()

    def follow(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        # The page just fetched counts as seen: a next link back to it would load it twice.
        self.seen.add(response.url)
        link = self._header_link(response) if self.where == "header" else self._body_link(response)
        if not link:
            return None
        link = urljoin(response.url, _vendor_text(link, "next link"))
        if _origin(link) != _origin(response.url):
            raise PaginationError(f"next link {link[:200]} leads away from {_origin(response.url)}: etrmflow does not "
                                  f"send this connector's credentials to another host; ask the vendor why")
        if link in self.seen:
            raise PaginationError(f"next link {link} was already seen in this walk: the vendor is looping")
        self.seen.add(link)
        following = request.copy()
        following.url = link
        following.params = {}  # a next link carries its own query
        return following

    def _body_link(self, response: Response) -> str | None:
        value = extract(response.body, self.path)
        if isinstance(value, list):
            value = next((item.get("href") for item in value
                          if isinstance(item, dict) and item.get("rel") == self.rel), None)
        return value if isinstance(value, str) and value else None

    def _header_link(self, response: Response) -> str | None:
        header = next((v for k, v in response.headers.items() if k.lower() == "link"), "")
        for part in header.split(","):
            if "<" not in part or ">" not in part:
                continue
            url = part[part.index("<") + 1:part.index(">")]
            params = part[part.index(">") + 1:]
            if any(p.strip().replace('"', "") == f"rel={self.rel}" for p in params.split(";")):
                return url
        return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or {'https': 443, 'http': 80}.get(parts.scheme)}"


def _vendor_text(value: str, what: str) -> str:
    """A cursor or link as the vendor sent it, refused if it spells a secret marker: the
    transport resolves ``${secret:NAME}`` in everything a request sends."""
    if "${secret:" in value:
        raise PaginationError(f"the vendor's {what} {value[:80]!r} holds a secret marker (${{secret:...}}); "
                              f"it is not sent")
    return value


@hookimpl
def etrmflow_paginator_types() -> list[type[Paginator]]:
    return [SinglePage, PageNumber, Offset, Cursor, NextLink]
