"""The sandbox's settlement-instructions endpoint over loopback: every booking is kept, so the
stats prove whether anything was booked twice; and the answer of a served POST can be lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from etrmflow.sandbox import SandboxConfig, SandboxServer, parse_faults

PATH = "/api/v2/settlement-instructions"
KEY = {"X-API-Key": "sandbox-key"}
Body = Callable[[aiohttp.ClientSession], Awaitable[None]]


def drive(body: Body, config: SandboxConfig | None = None) -> None:
    async def main() -> None:
        async with SandboxServer(config or SandboxConfig()) as server, \
                aiohttp.ClientSession(server.base_url) as session:
            await body(session)

    asyncio.run(main())


async def post(session: aiohttp.ClientSession, raw: bytes, key: str | None = None) -> tuple[int, Any, str | None]:
    headers = {**KEY, "Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    async with session.post(PATH, data=raw, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Idempotent-Replayed")


async def counts(session: aiohttp.ClientSession) -> tuple[int, int, int, int]:
    async with session.get("/_sandbox/stats") as response:
        stats = await response.json()
    return (stats["instructions_accepted"], stats["instructions_replayed"], stats["instructions_distinct"],
            stats["idempotency_conflicts"])


async def bookings(session: aiohttp.ClientSession) -> dict[str, list[dict[str, Any]]]:
    async with session.get("/_sandbox/instructions") as response:
        return json.loads(await response.read(), parse_float=Decimal)["instructions"]


TWO = b'[{"settlement_id": "S-1", "amount": 40.50}, {"settlement_id": "S-2", "amount": -0.10}]'


def test_a_key_books_once_replays_after_and_refuses_another_body() -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        assert await post(session, TWO, "k1") == (201, {"accepted": 2, "idempotency_key": "k1"}, None)
        assert await post(session, TWO, "k1") == (200, {"accepted": 2, "idempotency_key": "k1"}, "true")
        status, answer, _ = await post(session, TWO.replace(b"40.50", b"40.5"), "k1")
        assert (status, answer["error"]) == (422, "idempotency_key_reused")
        assert await counts(session) == (2, 2, 2, 1)
        booked = await bookings(session)
        assert sorted(booked) == ["S-1", "S-2"]
        # numbers come back exactly as they were sent: 40.50 is not 40.5
        assert [str(b["instruction"]["amount"]) for b in booked["S-1"] + booked["S-2"]] == ["40.50", "-0.10"]
        assert {b["idempotency_key"] for b in booked["S-1"]} == {"k1"}

    drive(body)


def test_without_a_key_every_post_books_and_the_stats_show_the_duplicate() -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        for _ in range(2):
            assert (await post(session, b'{"instructions": [{"settlement_id": "S-1"}]}'))[0] == 201
        assert await counts(session) == (2, 0, 1, 0)  # accepted 2 > distinct 1: booked twice
        assert len((await bookings(session))["S-1"]) == 2

    drive(body)


def test_a_required_key_makes_a_post_without_one_a_400() -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        assert await post(session, TWO) == (400, {"error": "idempotency_key_required",
                                                  "message": "send an Idempotency-Key header with each POST"}, None)
        assert (await post(session, TWO, "k"))[0] == 201

    drive(body, SandboxConfig.from_url("sandbox://acme?require_idempotency_key=true"))


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"{not json"])
def test_a_body_that_is_no_instruction_is_a_400(raw: bytes) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        status, answer, _ = await post(session, raw, "k")
        assert (status, answer["error"]) == (400, "invalid_json" if raw == b"{not json" else "invalid_body")
        assert await counts(session) == (0, 0, 0, 0)

    drive(body)


def test_accept_503_books_then_answers_503_and_the_retry_with_the_key_is_replayed() -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        status, answer, _ = await post(session, TWO, "k1")
        assert (status, answer) == (503, {"error": "service_unavailable"})
        assert await counts(session) == (2, 0, 2, 0)  # booked although the client heard 503
        assert await post(session, TWO, "k1") == (200, {"accepted": 2, "idempotency_key": "k1"}, "true")
        assert await counts(session) == (2, 2, 2, 0)

    drive(body, SandboxConfig(faults=parse_faults([f"accept-503:at=1,path={PATH}"])))


def test_accept_drop_books_then_drops_the_connection() -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(session, TWO, "k1")
        assert await counts(session) == (2, 0, 2, 0)
        assert (await post(session, TWO, "k1"))[2] == "true"

    drive(body, SandboxConfig(faults=parse_faults(["accept-drop:at=1"])))


def test_accept_faults_on_a_get_serve_it_and_lose_the_answer() -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        async with session.get("/api/v2/trades?limit=5", headers=KEY) as response:
            assert (response.status, response.headers.get("Retry-After")) == (503, "2")
        async with session.get("/_sandbox/stats") as response:
            assert (await response.json())["records_served"] == 5

    drive(body, SandboxConfig(faults=parse_faults(["accept-503:at=1,retry_after=2"])))
