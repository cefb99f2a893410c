"""The sandbox vendor over real loopback HTTP: auth, pagination, faults, admin, servers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import gc
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest

from etrmflow.sandbox import (
    FaultRule,
    SandboxConfig,
    SandboxServer,
    ThreadedSandbox,
    parse_faults,
    settlement,
    trade,
)
from etrmflow.sandbox.data import settlement_date

T = TypeVar("T")
Body = Callable[[SandboxServer, aiohttp.ClientSession], Awaitable[T]]
KEY = {"X-API-Key": "sandbox-key"}
REPO = Path(__file__).resolve().parents[2]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, even on CI


def drive(body: Body[T], config: SandboxConfig | None = None, *, force_close: bool = False) -> T:
    """Run ``body(server, session)`` against a fresh sandbox on 127.0.0.1."""

    async def main() -> T:
        async with SandboxServer(config or SandboxConfig()) as server:
            connector = aiohttp.TCPConnector(force_close=force_close)
            async with aiohttp.ClientSession(server.base_url, connector=connector) as session:
                return await body(server, session)

    return asyncio.run(main())


async def get_json(session: aiohttp.ClientSession, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(path, **kwargs) as response:
        return response.status, await response.json()


async def token(session: aiohttp.ClientSession, **form: str) -> tuple[int, Any]:
    async with session.post("/oauth2/token", data=form) as response:
        return response.status, await response.json()


async def stats(session: aiohttp.ClientSession) -> dict[str, Any]:
    return (await get_json(session, "/_sandbox/stats"))[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tokens ---------------------------------------------------------------------------------------

def test_client_credentials_in_the_form_or_as_basic_give_a_working_token() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        status, answer = await token(session, grant_type="client_credentials", client_id="demo",
                                     client_secret="demo-secret", scope="trade:read")
        assert status == 200
        assert answer.keys() == {"access_token", "token_type", "expires_in", "scope"}
        assert (answer["token_type"], answer["expires_in"], answer["scope"]) == ("Bearer", 3600, "trade:read")
        basic = "Basic " + base64.b64encode(b"demo:demo-secret").decode()
        async with session.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                headers={"Authorization": basic}) as response:
            second = await response.json()
        assert response.status == 200 and second["access_token"] != answer["access_token"]
        for issued in (answer["access_token"], second["access_token"]):
            status, _ = await get_json(session, "/api/v2/trades?limit=1",
                                       headers={"Authorization": f"Bearer {issued}"})
            assert status == 200
        assert (await stats(session))["tokens_issued"] == 2

    drive(body)


def test_password_grant_adds_id_and_refresh_tokens_and_sends_expires_in_as_a_string() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        status, answer = await token(session, grant_type="password", username="demo-user",
                                     password="demo-password", client_id="demo")
        assert status == 200
        assert answer.keys() == {"access_token", "id_token", "refresh_token", "token_type", "expires_in", "scope"}
        assert answer["expires_in"] == "3600" and answer["id_token"].count(".") == 2
        for name, expected in (("id_token", 200), ("access_token", 200), ("refresh_token", 401)):
            status, _ = await get_json(session, "/api/v2/trades?limit=1",
                                       headers={"Authorization": f"Bearer {answer[name]}"})
            assert status == expected, name

    drive(body)


@pytest.mark.parametrize("form", [
    {"grant_type": "client_credentials", "client_id": "demo", "client_secret": "wrong"},
    {"grant_type": "client_credentials", "client_id": "other", "client_secret": "demo-secret"},
    {"grant_type": "client_credentials"},
    {"grant_type": "password", "username": "demo-user", "password": "wrong"},
    {"grant_type": "password", "username": "demo-user", "password": "demo-password", "client_id": "other"},
])
def test_wrong_credentials_are_refused_as_invalid_client(form: dict[str, str]) -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        assert await token(session, **form) == (401, {"error": "invalid_client"})
        assert (await stats(session))["tokens_issued"] == 0

    drive(body)


@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token", ""])
def test_unsupported_grants_are_a_400(grant: str) -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        assert await token(session, grant_type=grant, client_id="demo", client_secret="demo-secret") == (
            400, {"error": "unsupported_grant_type"})

    drive(body)


def test_tokens_expire_by_the_injected_clock() -> None:
    clock = FakeClock()

    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        _, answer = await token(session, grant_type="client_credentials", client_id="demo", client_secret="demo-secret")
        assert answer["expires_in"] == 60
        bearer = {"Authorization": f"Bearer {answer['access_token']}"}
        clock.now += 59.9
        assert (await get_json(session, "/api/v2/trades?limit=1", headers=bearer))[0] == 200
        clock.now += 0.1
        async with session.get("/api/v2/trades?limit=1", headers=bearer) as response:
            assert (response.status, await response.json()) == (401, {"error": "token_expired"})
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        _, fresh = await token(session, grant_type="client_credentials", client_id="demo", client_secret="demo-secret")
        headers = {"Authorization": f"Bearer {fresh['access_token']}"}
        assert (await get_json(session, "/api/v2/trades?limit=1", headers=headers))[0] == 200

    drive(body, SandboxConfig(token_ttl=60, clock=clock))


# --- the ways to authenticate ------------------------------------------------------------------

@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("/api/v2/trades?limit=1", {"Authorization": "Bearer sandbox-token"}, (200, None)),
    ("/api/v2/trades?limit=1", {"X-API-Key": "sandbox-key"}, (200, None)),
    ("/api/v2/trades?limit=1&api_key=sandbox-key", {}, (200, None)),
    ("/public/v1/trades?page_size=1", {}, (200, None)),
    ("/api/v2/trades?limit=1", {}, (401, {"error": "unauthorized"})),
    ("/api/v2/trades?limit=1", {"Authorization": "Bearer not-a-token"}, (401, {"error": "unauthorized"})),
    ("/api/v2/trades?limit=1", {"Authorization": "Basic c2FuZGJveC10b2tlbg=="}, (401, {"error": "unauthorized"})),
    ("/api/v2/trades?limit=1", {"X-API-Key": "wrong"}, (401, {"error": "unauthorized"})),
    ("/api/v2/trades?limit=1&api_key=wrong", {}, (401, {"error": "unauthorized"})),
    ("/api/v2/settlements", {}, (401, {"error": "unauthorized"})),
])
def test_each_way_to_authenticate(path: str, headers: dict[str, str], expected: tuple[int, Any]) -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        async with session.get(path, headers=headers) as response:
            answer = await response.json()
            assert response.headers["Content-Type"] == "application/json"
        assert response.status == expected[0]
        if expected[1] is not None:
            assert answer == expected[1]

    drive(body)


# --- pagination -------------------------------------------------------------------------------------

TOTAL = 253  # not a multiple of the page size: the last page is short


async def walk_cursor(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    records, cursor = [], None
    while True:
        query = "limit=20" + (f"&cursor={cursor}" if cursor else "")
        _, page = await get_json(session, f"/api/v2/trades?{query}", headers=KEY)
        records += page["trades"]
        cursor = page["next_cursor"]
        if cursor is None:
            return records


async def walk_pages(session: aiohttp.ClientSession, path: str = "/api/v2/trades/pages") -> list[dict[str, Any]]:
    records, number = [], 1
    while True:
        _, page = await get_json(session, f"{path}?page={number}&page_size=20", headers=KEY)
        assert (page["page"], page["page_size"], page["total_pages"]) == (number, 20, 13)
        records += page["data"]
        if not page["next_page"]:
            return records
        number += 1


async def walk_offset(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        _, page = await get_json(session, f"/api/v2/trades/offset?offset={len(records)}&limit=20", headers=KEY)
        assert (page["offset"], page["limit"], page["total"]) == (len(records), 20, str(TOTAL))
        records += page["items"]
        if len(records) >= int(page["total"]):
            return records


async def walk_links(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    records, url = [], "/api/v2/trades/links?page=1&page_size=20"
    while url:
        _, page = await get_json(session, url, headers=KEY)
        records += page["trades"]
        links = {link["rel"]: link["href"] for link in page["links"]}
        assert links["self"].startswith("http://127.0.0.1:") and links["self"].endswith(url.split("/api", 1)[1])
        url = links.get("next")
    return records


async def walk_link_header(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    records, url = [], "/api/v2/trades/link-header?page=1&per_page=20"
    while url:
        async with session.get(url, headers=KEY) as response:
            records += await response.json()
            link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
        assert link is None or (link.startswith("<http://127.0.0.1:") and link.endswith('>; rel="next"'))
    return records


@pytest.mark.parametrize("walk", [walk_cursor, walk_pages, walk_offset, walk_links, walk_link_header,
                                  lambda s: walk_pages(s, "/public/v1/trades")],
                         ids=["cursor", "pages", "offset", "links", "link-header", "public"])
def test_each_pagination_style_walks_the_dataset_exactly_once_in_order(walk: Callable[..., Any]) -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        records = await walk(session)
        assert records == [trade(i, 7) for i in range(TOTAL)]
        assert (await stats(session))["records_served"] == TOTAL

    drive(body, SandboxConfig(trades=TOTAL))


@pytest.mark.parametrize(("path", "expected"), [
    ("/api/v2/trades/pages?page=4&page_size=100", {"data": [], "page": 4, "page_size": 100, "total_pages": 3,
                                                   "next_page": False}),
    ("/api/v2/trades/offset?offset=250&limit=100", {"items": [], "offset": 250, "limit": 100, "total": "250"}),
    ("/api/v2/trades/offset?offset=240&limit=1000", None),
    ("/api/v2/trades/pages?page_size=1001", {"error": "invalid_parameter", "parameter": "page_size",
                                             "message": "page_size must be between 1 and 1000, got 1001"}),
    ("/api/v2/trades?limit=0", {"error": "invalid_parameter", "parameter": "limit",
                                "message": "limit must be >= 1, got 0"}),
    ("/api/v2/trades/link-header?per_page=ten", {"error": "invalid_parameter", "parameter": "per_page",
                                                 "message": "per_page must be an integer, got 'ten'"}),
    ("/api/v2/trades?cursor=bm9wZQ", {"error": "invalid_cursor", "message": "unknown cursor 'bm9wZQ'"}),
    ("/api/v2/trades?cursor=ODoxMDA", {"error": "invalid_cursor", "message": "unknown cursor 'ODoxMDA'"}),
])
def test_page_edges_and_bad_parameters(path: str, expected: dict[str, Any] | None) -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        status, answer = await get_json(session, path, headers=KEY)
        if expected is None:
            assert status == 200 and [t["trade_id"] for t in answer["items"]] == [
                f"ACME-T-{i:07d}" for i in range(241, 251)]
        else:
            assert (status, answer) == (400 if "error" in expected else 200, expected)

    drive(body)


def test_the_last_page_has_no_next_link() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        _, page = await get_json(session, "/api/v2/trades/links?page=3&page_size=100", headers=KEY)
        assert page["links"] == [{"rel": "self", "href": f"{server.base_url}/api/v2/trades/links?page=3&page_size=100"}]
        _, page = await get_json(session, "/api/v2/trades/links?page=2&page_size=100&api_key=sandbox-key")
        assert page["links"][1] == {"rel": "next", "href": f"{server.base_url}/api/v2/trades/links?page=3&page_size=100&api_key=sandbox-key"}
        async with session.get("/api/v2/trades/link-header?page=3&per_page=100", headers=KEY) as response:
            assert "Link" not in response.headers and len(await response.json()) == 50

    drive(body)


# --- settlements ----------------------------------------------------------------------------------

def test_settlements_are_filtered_to_the_date_window_and_paged() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        expected = [settlement(i, 7) for i in range(120) if "2025-03-01" <= settlement_date(i, 7) < "2025-06-01"]
        assert 20 < len(expected) < 40
        records, number = [], 1
        while True:
            status, page = await get_json(session, "/api/v2/settlements", headers=KEY, params={
                "start_date": "2025-03-01", "end_date": "2025-06-01", "page": number, "page_size": 10})
            assert status == 200 and page["total_pages"] == -(-len(expected) // 10) and page["page"] == number
            records += page["results"]
            if not page["next_page"]:
                break
            number += 1
        assert records == expected
        _, everything = await get_json(session, "/api/v2/settlements?page_size=1000", headers=KEY)
        assert everything["results"] == [settlement(i, 7) for i in range(120)]
        _, since = await get_json(session, "/api/v2/settlements?start_date=2025-12-01&page_size=1000", headers=KEY)
        assert [r["settlement_id"] for r in since["results"]] == [
            f"ACME-S-{i + 1:07d}" for i in range(120) if settlement_date(i, 7) >= "2025-12-01"]
        assert await get_json(session, "/api/v2/settlements?end_date=2025-13-01", headers=KEY) == (400, {
            "error": "invalid_parameter", "parameter": "end_date",
            "message": "end_date must be a date YYYY-MM-DD, got '2025-13-01'"})

    drive(body)


# --- idempotent POST ------------------------------------------------------------------------------

def test_settlement_instructions_are_accepted_once_per_idempotency_key() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        instructions = [{"settlement_id": "ACME-S-0000001"}, {"settlement_id": "ACME-S-0000002"}]
        headers = {**KEY, "Idempotency-Key": "run-1-batch-1"}
        answers = []
        for _ in range(2):
            async with session.post("/api/v2/settlement-instructions", json=instructions, headers=headers) as r:
                answers.append((r.status, await r.json(), r.headers.get("Idempotent-Replayed")))
        assert answers == [(201, {"accepted": 2, "idempotency_key": "run-1-batch-1"}, None),
                           (200, {"accepted": 2, "idempotency_key": "run-1-batch-1"}, "true")]
        async with session.post("/api/v2/settlement-instructions", json=instructions[:1], headers=headers) as r:
            assert r.status == 422 and (await r.json())["error"] == "idempotency_key_reused"
        for _ in range(2):  # no key: nothing to deduplicate on
            async with session.post("/api/v2/settlement-instructions", json=instructions[0], headers=KEY) as r:
                assert (r.status, await r.json()) == (201, {"accepted": 1, "idempotency_key": None})
        assert (await stats(session))["instructions_accepted"] == 4

    drive(body)


# --- faults ---------------------------------------------------------------------------------------

async def statuses(session: aiohttp.ClientSession, count: int, path: str = "/api/v2/trades?limit=1") -> list[int]:
    found = []
    for _ in range(count):
        async with session.get(path, headers=KEY) as response:
            await response.read()
            found.append(response.status)
    return found


def failing(found: list[int]) -> list[int]:
    return [number for number, status in enumerate(found, start=1) if status != 200]


def test_every_counts_data_requests_per_rule_and_stats_count_injections() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        await token(session, grant_type="client_credentials", client_id="demo", client_secret="demo-secret")
        found = await statuses(session, 12)
        assert failing(found) == [4, 8, 12] and {found[3], found[7]} == {503}
        counts = await stats(session)
        assert counts["faults_injected"] == {"503": 3} and counts["data_requests"] == 12
        assert counts["requests"] == {"/api/v2/trades": 12, "/oauth2/token": 1}
        assert counts["faults"] == ["503:every=4"]

    drive(body, SandboxConfig.from_url("sandbox://acme?fault=503:every=4"))


def test_burst_at_times_and_path_select_the_failing_requests() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        assert failing(await statuses(session, 25)) == [5, 6, 10, 11, 15, 20, 21]
        assert failing(await statuses(session, 3, "/api/v2/settlements?page_size=1")) == []
        assert (await stats(session))["faults_injected"] == {"502": 3, "503": 4}

    rules = parse_faults(["503:every=5,burst=2,times=4", "502:at=15+20+21,path=/api/v2/trades"])
    drive(body, SandboxConfig(faults=rules))


@pytest.mark.parametrize(("spec", "status", "retry_after"), [
    ("429", 429, "1"),
    ("429:retry_after=2", 429, "2"),
    ("429:retry_after=0.5", 429, "0.5"),
    ("429-bare", 429, None),
    ("503", 503, None),
    ("503:retry_after=30", 503, "30"),
    ("502", 502, None),
])
def test_error_status_faults_and_their_retry_after(spec: str, status: int, retry_after: str | None) -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        async with session.get("/public/v1/trades") as response:
            answer = await response.json()
            assert response.status == status and response.headers.get("Retry-After") == retry_after
        assert answer == {"error": {429: "rate_limited", 503: "service_unavailable", 502: "bad_gateway"}[status]}

    drive(body, SandboxConfig(faults=(FaultRule.parse(spec),)))


def test_429_date_sends_an_http_date_in_the_future() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        before = time.time()
        async with session.get("/public/v1/trades") as response:
            assert response.status == 429
            when = email.utils.parsedate_to_datetime(response.headers["Retry-After"]).timestamp()
        assert response.headers["Retry-After"].endswith(" GMT")
        assert before + 4 <= when <= time.time() + 6

    drive(body, SandboxConfig(faults=(FaultRule.parse("429-date:retry_after=5"),)))


def test_slow_answers_late_but_correctly() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        status, page = await get_json(session, "/public/v1/trades?page_size=2")
        assert time.perf_counter() - started >= 0.2
        assert status == 200 and page["data"] == [trade(0, 7), trade(1, 7)]

    drive(body, SandboxConfig(faults=(FaultRule.parse("slow:delay=0.2"),)))


def test_drop_closes_the_connection_without_an_answer() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await statuses(session, 1, "/public/v1/trades")
        # aiohttp resends an idempotent request once after a disconnect: a GET only fails for
        # the caller when two drops come in a row, hence burst=2.
        assert (await stats(session))["faults_injected"] == {"drop": 2}
        assert await statuses(session, 1, "/public/v1/trades") == [200]
        with pytest.raises(aiohttp.ServerDisconnectedError):  # a POST is never resent
            await session.post("/api/v2/settlement-instructions", json=[{"id": 1}], headers=KEY)
        counts = await stats(session)
        assert counts["faults_injected"] == {"drop": 3} and counts["instructions_accepted"] == 0

    drive(body, SandboxConfig(faults=parse_faults(["drop:at=1,burst=2", "drop:at=4"])))


def test_malformed_is_a_200_whose_json_does_not_parse() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        async with session.get("/api/v2/trades?limit=5", headers=KEY) as response:
            raw = await response.read()
            assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        whole = orjson.dumps({"trades": [trade(i, 7) for i in range(5)], "next_cursor": "Nzo1"})
        assert raw == whole[: len(whole) // 2]
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)

    drive(body, SandboxConfig(faults=(FaultRule.parse("malformed"),)))


def test_error_body_is_a_200_with_an_error_object() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        assert await get_json(session, "/public/v1/trades") == (200, {"error": {
            "code": "E_BACKEND", "message": "backend temporarily unavailable, try again"}})

    drive(body, SandboxConfig(faults=(FaultRule.parse("error-body:times=1"),)))


def test_expire_tokens_makes_the_client_fetch_a_new_token() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        async def bearer() -> dict[str, str]:
            _, answer = await token(session, grant_type="client_credentials", client_id="demo",
                                    client_secret="demo-secret")
            return {"Authorization": f"Bearer {answer['access_token']}"}

        old = await bearer()
        assert (await get_json(session, "/api/v2/trades?limit=1", headers=old))[0] == 200
        assert await get_json(session, "/api/v2/trades?limit=1", headers=old) == (401, {"error": "token_expired"})
        assert (await get_json(session, "/api/v2/trades?limit=1", headers=KEY))[0] == 200  # keys do not expire
        assert (await get_json(session, "/api/v2/trades?limit=1", headers=await bearer()))[0] == 200

    drive(body, SandboxConfig(faults=(FaultRule.parse("expire-tokens:at=2"),)))


def test_faults_are_replaced_and_reset_through_the_admin_routes() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        async with session.post("/_sandbox/faults", json=["429:at=1", {"kind": "503", "at": [2]}]) as response:
            assert (response.status, await response.json()) == (200, {"faults": ["429:at=1", "503:at=2"]})
        assert await statuses(session, 3) == [429, 503, 200]
        async with session.post("/_sandbox/faults", json=["5o3"]) as response:
            assert (response.status, await response.json()) == (400, {"error": "invalid_faults", "message": (
                "bad fault spec '5o3': unknown kind '5o3'; valid kinds: 429, 429-date, 429-bare, 503, 502, "
                "slow, drop, expire-tokens, malformed, error-body, accept-503, accept-drop")})
        async with session.post("/_sandbox/reset") as response:
            assert (await response.json()) == {"reset": True, "faults": ["502:every=2"]}
        assert await stats(session) == {"requests": {}, "data_requests": 0, "records_served": 0,
                                        "tokens_issued": 0, "faults_injected": {}, "instructions_accepted": 0,
                                        "instructions_replayed": 0, "instructions_distinct": 0,
                                        "idempotency_conflicts": 0,
                                        "faults": ["502:every=2"]}
        assert await statuses(session, 2) == [200, 502]

    drive(body, SandboxConfig(faults=(FaultRule.parse("502:every=2"),)))


def test_token_and_admin_routes_are_never_faulted_or_counted_as_data() -> None:
    async def body(server: SandboxServer, session: aiohttp.ClientSession) -> None:
        status, _ = await token(session, grant_type="client_credentials", client_id="demo", client_secret="demo-secret")
        assert status == 200 and (await stats(session))["data_requests"] == 0

    drive(body, SandboxConfig(faults=(FaultRule.parse("503:path=/*"),)))


# --- determinism ----------------------------------------------------------------------------------

def test_two_servers_with_the_same_seed_serve_identical_pages() -> None:
    async def pages(config: SandboxConfig) -> list[bytes]:
        async def body(server: SandboxServer, session: aiohttp.ClientSession) -> list[bytes]:
            found = []
            for path in ("/api/v2/trades?limit=40", "/api/v2/trades/pages?page=3&page_size=50",
                         "/api/v2/settlements?page_size=30&start_date=2025-02-01"):
                async with session.get(path, headers=KEY) as response:
                    found.append(await response.read())
            return found
        return await asyncio.to_thread(drive, body, config)

    async def both() -> tuple[list[bytes], list[bytes], list[bytes]]:
        return await asyncio.gather(pages(SandboxConfig(seed=3)), pages(SandboxConfig(seed=3)),
                                    pages(SandboxConfig(seed=4)))

    first, second, other = asyncio.run(both())
    assert first == second and len(first[0]) > 10_000
    assert all(a != b for a, b in zip(first, other))


# --- configuration and fault specs -----------------------------------------------------------

def test_from_url_reads_every_key() -> None:
    config = SandboxConfig.from_url("sandbox://acme?trades=500&seed=3&token_ttl=5&fault=503:every=4"
                                    "&fault=429:at=3+7&client_secret=s3&max_page_size=50")
    assert config == dataclasses.replace(
        SandboxConfig(), trades=500, seed=3, token_ttl=5.0, client_secret="s3", max_page_size=50,
        faults=(FaultRule(kind="503", every=4), FaultRule(kind="429", at=(3, 7))))
    assert SandboxConfig.from_url("sandbox://any name at all") == SandboxConfig()


@pytest.mark.parametrize(("url", "message"), [
    ("sandbox://acme?trade=5", "unknown sandbox URL key 'trade'; valid keys: seed, trades, settlements, client_id, "
     "client_secret, username, password, api_key, static_token, token_ttl, max_page_size, "
     "require_idempotency_key, fault"),
    ("sandbox://acme?trades=many", "sandbox URL key 'trades' must be an integer, got 'many'"),
    ("sandbox://acme?token_ttl=soon", "sandbox URL key 'token_ttl' must be a number, got 'soon'"),
    ("sandbox://acme?trades=-1", "sandbox trades must be >= 0, got -1"),
    ("sandbox://acme?fault=503:evry=4", "bad fault spec '503:evry=4': unknown key 'evry'; valid keys: every, at, "
     "burst, path, times, retry_after (429, 429-date, 503, 502, "
     "accept-503), delay (slow)"),
    ("http://acme", "not a sandbox URL (scheme 'http'); expected sandbox://NAME?key=value..."),
])
def test_from_url_errors_name_the_bad_part(url: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        SandboxConfig.from_url(url)
    assert str(error.value) == message


@pytest.mark.parametrize(("spec", "rule"), [
    ("drop", FaultRule(kind="drop")),
    ("429:at=3+7,retry_after=2", FaultRule(kind="429", at=(3, 7), retry_after=2.0)),
    ("429:at=3 7", FaultRule(kind="429", at=(3, 7))),
    (" slow : delay=0.25 , path=/api/v2/settlements* ", FaultRule(kind="slow", delay=0.25, path="/api/v2/settlements*")),
    ("expire-tokens:every=3,burst=1,times=2", FaultRule(kind="expire-tokens", every=3, times=2)),
])
def test_fault_specs_parse_and_round_trip(spec: str, rule: FaultRule) -> None:
    assert FaultRule.parse(spec) == rule
    assert FaultRule.parse(rule.spec()) == rule and FaultRule.from_dict(rule.to_dict()) == rule


@pytest.mark.parametrize(("spec", "message"), [
    ("5o3", "unknown kind '5o3'; valid kinds: 429, 429-date, 429-bare, 503, 502, slow, drop, expire-tokens, "
     "malformed, error-body, accept-503, accept-drop"),
    ("503:every", "'every' is not key=value; write KIND[:key=value,...], e.g. 503:every=4"),
    ("503:every=x", "every must be a positive integer, got 'x'"),
    ("503:burst=0", "burst must be a positive integer, got '0'"),
    ("429:at=", "at must be request numbers joined by '+' (e.g. at=3+7), got ''"),
    ("drop:delay=1", "key 'delay' only applies to kind slow"),
    ("slow:delay=-1", "delay must be a number of seconds >= 0, got '-1'"),
    ("503:path=api", "path must be a glob starting with '/', e.g. /api/v2/trades*, got 'api'"),
])
def test_fault_spec_errors_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        FaultRule.parse(spec)
    assert str(error.value) == f"bad fault spec {spec!r}: {message}"


def test_fault_dicts_need_a_kind() -> None:
    with pytest.raises(ValueError, match=r"needs a 'kind', one of: 429, 429-date"):
        FaultRule.from_dict({"every": 2})


# --- servers ----------------------------------------------------------------------------------

def _port_is_closed(base_url: str) -> bool:
    host, port = base_url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def test_threaded_sandbox_starts_serves_and_stops_cleanly() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadedSandbox(SandboxConfig(trades=30)) as sandbox:
            request = urllib.request.Request(sandbox.base_url + "/api/v2/trades/pages?page_size=30", headers=KEY)
            with NO_PROXY.open(request, timeout=5) as response:
                assert orjson.loads(response.read())["data"] == [trade(i, 7) for i in range(30)]
            assert sandbox.stats()["data_requests"] == 1
            assert sandbox.set_faults(["503:at=1", FaultRule(kind="429", at=(2,))]) == ["503:at=1", "429:at=2"]
            assert sandbox.stats()["faults"] == ["503:at=1", "429:at=2"]
            sandbox.reset()
            assert sandbox.stats()["faults"] == [] and sandbox.stats()["data_requests"] == 0
            base_url = sandbox.base_url
        gc.collect()
    assert _port_is_closed(base_url)
    assert [str(w.message) for w in caught] == []


def test_serve_prints_the_url_once_and_stops_on_ctrl_c() -> None:
    code = "from etrmflow.sandbox import serve, SandboxConfig; serve(SandboxConfig(trades=3), port=0)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        banner: list[str] = []
        while not banner or not banner[-1].startswith("Press Ctrl-C"):
            line = process.stdout.readline()
            assert line, "serve() ended before printing its banner"
            banner.append(line)
        assert banner[0].startswith("etrmflow sandbox vendor listening on http://127.0.0.1:")
        assert any("client_secret=demo-secret" in line for line in banner)
        base_url = banner[0].split()[-1]
        with NO_PROXY.open(base_url + "/public/v1/trades", timeout=5) as response:
            assert len(orjson.loads(response.read())["data"]) == 3
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert (process.returncode, rest, err) == (0, "", "")
    assert _port_is_closed(base_url)
