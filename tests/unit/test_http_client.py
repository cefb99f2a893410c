"""The HTTP client over real loopback: secrets resolved as the request leaves, never before."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from etrmflow.clock import Clock
from etrmflow.components import Request
from etrmflow.engine.http_client import FetchCounters, HttpSession
from etrmflow.secrets import SecretStore, redact

CANARY = "canary-body-5f0e1d"


async def _exchange(request: Request) -> tuple[dict[str, Any], dict[str, str]]:
    seen: dict[str, Any] = {}

    async def handler(incoming: web.Request) -> web.Response:
        seen["body"] = await incoming.json()
        seen["headers"] = dict(incoming.headers)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/instructions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpSession(session, base_url=f"http://127.0.0.1:{port}",
                                 secrets=SecretStore(environ={"ACCOUNT_KEY": CANARY}), clock=Clock(),
                                 counters=FetchCounters(), ssl_context=False)
            await client.send(request)
    finally:
        await runner.cleanup()
    return seen["body"], seen["headers"]


def test_secret_markers_in_a_json_body_and_headers_are_resolved_on_the_wire() -> None:
    request = Request(method="POST", url="/instructions",
                      headers={"X-Account": "${secret:ACCOUNT_KEY}"},
                      json={"account": {"key": "${secret:ACCOUNT_KEY}"}, "items": ["id ${secret:ACCOUNT_KEY}", 3]})

    body, headers = asyncio.run(_exchange(request))

    assert body == {"account": {"key": CANARY}, "items": [f"id {CANARY}", 3]}
    assert headers["X-Account"] == CANARY
    assert request.json["account"]["key"] == "${secret:ACCOUNT_KEY}"  # the plan's copy keeps the marker
    assert redact(f"sent {CANARY}") == "sent ***"  # and the value is now masked everywhere
