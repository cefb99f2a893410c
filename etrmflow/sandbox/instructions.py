"""Settlement instructions: the sandbox's write endpoint, idempotent by ``Idempotency-Key``.

``POST /api/v2/settlement-instructions`` takes one instruction object, a list of them, or
``{"instructions": [...]}``. With an ``Idempotency-Key`` the first request books the
instructions and answers 201; the same key with the same body again answers the stored answer
(200, ``Idempotent-Replayed: true``) and books nothing; the same key with another body answers
422. Without a key every request books (unless the config's ``require_idempotency_key`` makes
it a 400).

The sandbox keeps every booking, so a test can prove that nothing was booked twice: an
instruction is identified by its ``settlement_id`` (by its whole content when it has none), and
``GET /_sandbox/instructions`` lists the bookings of each, numbers exactly as they were sent.
"""

from __future__ import annotations

import decimal
import hashlib
import json
from typing import Any

import orjson
from aiohttp import web

from etrmflow.sandbox.responses import ApiError, json_response
from etrmflow.sandbox.state import STATE_KEY, SandboxState, StoredAnswer

KEY_HEADER = "Idempotency-Key"
ID_FIELD = "settlement_id"
WRAPPER = "instructions"
"""A body may also be ``{"instructions": [...]}``."""


def _parse(raw: bytes) -> list[dict[str, Any]]:
    """The instructions of a body; numbers as Decimal, so they are kept exactly as sent."""
    try:
        body = json.loads(raw, parse_float=decimal.Decimal)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_json", message="the body is not JSON") from None
    if isinstance(body, dict) and isinstance(body.get(WRAPPER), list):
        body = body[WRAPPER]
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(item, dict) for item in items):
        raise ApiError(400, "invalid_body", message="send one instruction object or a list of them")
    return items


def _identity(item: dict[str, Any]) -> str:
    found = item.get(ID_FIELD)
    if isinstance(found, str) and found:
        return found
    return "sha256:" + hashlib.sha256(_dumps(item, sort=True)).hexdigest()


def _dumps(value: Any, *, sort: bool = False) -> bytes:
    return orjson.dumps(value, default=_exact_number, option=orjson.OPT_SORT_KEYS if sort else 0)


def _exact_number(value: Any) -> Any:
    """A Decimal goes out as the digits it came with: 40.50 stays 40.50."""
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _book(state: SandboxState, items: list[dict[str, Any]], key: str | None) -> None:
    for item in items:
        identity = _identity(item)
        if identity not in state.instructions:
            state.stats.instructions_distinct += 1
        state.instructions.setdefault(identity, []).append({"idempotency_key": key, "instruction": item})
        state.stats.instructions_accepted += 1


async def settlement_instructions(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    raw = await request.read()
    items = _parse(raw)
    key = request.headers.get(KEY_HEADER)
    if key is None and state.config.require_idempotency_key:
        raise ApiError(400, "idempotency_key_required", message=f"send an {KEY_HEADER} header with each POST")
    fingerprint = hashlib.sha256(raw).digest()
    if key is not None and key in state.answers:
        stored = state.answers[key]
        if stored.fingerprint != fingerprint:
            state.stats.idempotency_conflicts += 1
            raise ApiError(422, "idempotency_key_reused",
                           message=f"this {KEY_HEADER} was used with a different body")
        state.stats.instructions_replayed += stored.body["accepted"]
        return json_response(stored.body, headers={"Idempotent-Replayed": "true"})
    _book(state, items, key)
    answer = {"accepted": len(items), "idempotency_key": key}
    if key is not None:
        state.answers[key] = StoredAnswer(fingerprint=fingerprint, body=answer)
    return json_response(answer, status=201)


async def booked_instructions(request: web.Request) -> web.Response:
    """Admin: every booking of every instruction, ``{"instructions": {id: [booking, ...]}}``."""
    state = request.app[STATE_KEY]
    return web.Response(body=_dumps({"instructions": state.instructions}), content_type="application/json")


def add_instruction_routes(app: web.Application) -> None:
    app.router.add_post("/api/v2/settlement-instructions", settlement_instructions)
    app.router.add_get("/_sandbox/instructions", booked_instructions)
