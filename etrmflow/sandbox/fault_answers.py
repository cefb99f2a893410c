"""How each fault kind answers a data request (see ``etrmflow.sandbox.faults`` for which)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

from aiohttp import web

from etrmflow.sandbox.faults import FaultRule
from etrmflow.sandbox.responses import json_response
from etrmflow.sandbox.state import SandboxState

Proceed = Callable[[], Awaitable[web.StreamResponse]]
BACKEND_ERROR = {"error": {"code": "E_BACKEND", "message": "backend temporarily unavailable, try again"}}


def seconds_text(seconds: float) -> str:
    """``Retry-After`` delay-seconds: an integer when it is one (HTTP wants integers)."""
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


def _retry_after_headers(rule: FaultRule) -> dict[str, str]:
    seconds = rule.retry_after_seconds
    if seconds is None or rule.kind == "429-bare":
        return {}
    if rule.kind == "429-date":
        # An HTTP date has whole seconds: round up so the client never retries too early.
        return {"Retry-After": formatdate(math.ceil(time.time() + seconds), usegmt=True)}
    return {"Retry-After": seconds_text(seconds)}


def _drop(request: web.Request) -> web.Response:
    """Close the connection without a byte of response; the client sees a disconnect."""
    transport = request.transport
    if transport is not None:
        transport.close()
    # Never written: the transport is gone. aiohttp needs a response object to finish.
    return web.Response(status=503)


def _truncated(response: web.StreamResponse) -> web.Response:
    body = response.body if isinstance(response, web.Response) and isinstance(response.body, bytes) else b"{}"
    # A strict prefix of a JSON object or array is never valid JSON.
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return web.Response(body=body[: len(body) // 2], status=response.status, headers=headers,
                        content_type="application/json")


async def answer_with_fault(rule: FaultRule, request: web.Request, state: SandboxState,
                            proceed: Proceed) -> web.StreamResponse:
    kind = rule.kind
    if kind.startswith("accept-"):
        await proceed()  # served (a POST is booked), and then the answer is lost on its way
        if kind == "accept-drop":
            return _drop(request)
        return json_response({"error": "service_unavailable"}, status=503, headers=_retry_after_headers(rule))
    if kind.startswith("429"):
        return json_response({"error": "rate_limited"}, status=429, headers=_retry_after_headers(rule))
    if kind in ("502", "503"):
        error = "bad_gateway" if kind == "502" else "service_unavailable"
        return json_response({"error": error}, status=int(kind), headers=_retry_after_headers(rule))
    if kind == "error-body":
        return json_response(BACKEND_ERROR)
    if kind == "drop":
        return _drop(request)
    if kind == "slow":
        await asyncio.sleep(rule.delay_seconds)
    elif kind == "expire-tokens":
        state.tokens.expire_all()
    elif kind == "malformed":
        return _truncated(await proceed())
    return await proceed()
