"""Resilience over real loopback HTTP: throttling, timeouts, the circuit breaker, the request
quota, idempotent POSTs and response rules, each through the real CLI against the sandbox."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from etrmflow.builtins.auth import ApiKey
from etrmflow.clock import FakeClock
from etrmflow.components import Kind
from etrmflow.engine.breaker import CircuitOpen
from etrmflow.engine.http import HttpTransport
from etrmflow.plan import (
    BreakerPolicy,
    ComponentPlan,
    ConnectorPlan,
    RetryPolicy,
    StreamPlan,
    TimeoutPolicy,
)
from etrmflow.plugins import Registry
from etrmflow.sandbox import ThreadedSandbox
from etrmflow.secrets import SecretStore
from etrmflow.testing import EtrmflowProject, SandboxFactory

from . import FAST_RETRY, PAGE_SIZE, TRADES, assert_every_trade_once, sandbox_project

PAGES = -(-TRADES // PAGE_SIZE)
KEY = "{type: api_key, in: header, name: X-API-Key, value: sandbox-key}"
RETRY_LINE = re.compile(r"WARNING retrying (GET|POST) http://127\.0\.0\.1:\d+(\S+) \[request [0-9a-f]{12}\] "
                        r"\(attempt (\d) of \d\) in (\d+\.\d\d)s after: (.*)$")


def run(project: EtrmflowProject, pipeline: str = "pipelines/trades.yml") -> tuple[Any, list[tuple[str, ...]]]:
    """The CLI result and, for each retry logged, (method, path, attempt, wait, reason)."""
    result = project.run("run", pipeline)
    retries = [match.groups() for line in result.stderr.splitlines() if (match := RETRY_LINE.search(line))]
    return result, retries


def start(factory: SandboxFactory, project: EtrmflowProject, *faults: str, policy: str = FAST_RETRY,
          **stream: str) -> tuple[ThreadedSandbox, EtrmflowProject]:
    vendor = factory(trades=TRADES, faults=list(faults))
    return vendor, sandbox_project(project, vendor, auth=KEY, policy=policy, **stream)


# --- throttling and timeouts -------------------------------------------------------------------

def test_a_bare_429_backs_off_on_the_policy(etrmflow_project: EtrmflowProject,
                                            sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "429-bare:at=3,burst=2")

    result, retries = run(project)

    assert result.exit_code == 0, result.output
    # No Retry-After to honour: the policy's exponential backoff (0.01 s, then 0.02 s).
    assert [(attempt, wait) for _, _, attempt, wait, _ in retries] == [("2", "0.01"), ("3", "0.02")]
    assert all(reason.endswith("answered 429") for *_, reason in retries)
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 2)
    assert vendor.stats()["faults_injected"] == {"429-bare": 2}


def test_a_retry_after_http_date_is_honoured(etrmflow_project: EtrmflowProject,
                                             sandbox_vendor_factory: SandboxFactory) -> None:
    policy = FAST_RETRY.replace("retry_after: {max: 1s}", "retry_after: {max: 3s}")
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "429-date:at=2,retry_after=0.3",
                            policy=policy)

    began = time.monotonic()
    result, retries = run(project)
    elapsed = time.monotonic() - began

    assert result.exit_code == 0, result.output
    [(_, _, attempt, wait, reason)] = retries
    # An HTTP date has whole seconds, rounded up by the vendor: the wait is about 0.3 s to 1.3 s,
    # never the policy's 0.01 s backoff, and the run really waited that long.
    assert attempt == "2" and 0.25 <= float(wait) <= 1.3, retries
    assert reason.endswith("answered 429") and elapsed >= float(wait)
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 1)
    assert vendor.stats()["faults_injected"] == {"429-date": 1}


TIMEOUT = "  timeout: {connect: 1s, read: 0.2s, total: 0.2s}\n"
TIMEOUT_POLICY = FAST_RETRY + TIMEOUT


def test_a_slow_response_times_out_and_is_retried(etrmflow_project: EtrmflowProject,
                                                  sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "slow:at=4,delay=0.6",
                            policy=TIMEOUT_POLICY)

    result, retries = run(project)

    assert result.exit_code == 0, result.output
    assert [(attempt, wait) for _, _, attempt, wait, _ in retries] == [("2", "0.01")]
    assert retries[0][4].endswith("/api/v2/trades?limit=10&cursor=NzozMA timed out"), retries
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 1)
    assert vendor.stats()["faults_injected"] == {"slow": 1}


def test_a_timeout_fails_the_run_when_the_policy_says_so(etrmflow_project: EtrmflowProject,
                                                         sandbox_vendor_factory: SandboxFactory) -> None:
    policy = FAST_RETRY + "    on_timeout: false\n" + TIMEOUT
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "slow:at=2,delay=0.6", policy=policy)

    result, retries = run(project)

    assert (result.exit_code, retries) == (1, [])
    assert project.pipeline_result()["error"].endswith(
        "/api/v2/trades?limit=10&cursor=NzoxMA timed out (not retried: retry.on_timeout is false)")
    assert project.pipeline_result()["counts"]["pages"] == 1
    assert vendor.stats()["data_requests"] == 2


# --- circuit breaker ---------------------------------------------------------------------------

BREAKER_POLICY = FAST_RETRY.replace("max_attempts: 4", "max_attempts: 5") + \
    "  breaker: {failure_threshold: 2, cooldown: 60s}\n"


def test_an_open_breaker_fails_fast_without_calling_the_vendor(etrmflow_project: EtrmflowProject,
                                                               sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "503", policy=BREAKER_POLICY)

    result, retries = run(project)

    assert result.exit_code == 1
    # Attempt 1 and 2 reach the vendor and open the breaker; attempt 3 never leaves.
    assert [(attempt, wait) for _, _, attempt, wait, _ in retries] == [("2", "0.01"), ("3", "0.02")]
    error = project.pipeline_result()["error"]
    assert re.fullmatch(r"circuit open for GET http://127\.0\.0\.1:\d+/api/v2/trades: 2 failures in a row; "
                        r"not calling the vendor for another 60s", error), error
    assert vendor.stats()["data_requests"] == 2
    assert re.search(r"WARNING circuit breaker for GET http://127\.0\.0\.1:\d+/api/v2/trades: closed -> open "
                     r"\(2 consecutive failures\)$", result.stderr, re.MULTILINE), result.stderr
    assert [(t["from"], t["to"], t["reason"]) for t in project.pipeline_result()["breaker_transitions"]] == [
        ("closed", "open", "2 consecutive failures")]


def _transport(base_url: str, clock: FakeClock, stream: StreamPlan) -> HttpTransport:
    registry = Registry.default(load_entry_points=False)
    connector = ConnectorPlan(name="vendor", type="http", file="connectors/vendor.yml", base_url=base_url,
                              auth=ComponentPlan(type="api_key", options={}), headers={}, params={},
                              tls_verify=True, ca_bundle=None, concurrency=1)
    auth = ApiKey({"in": "header", "name": "X-API-Key", "value": "sandbox-key"}, clock=clock)
    return HttpTransport({}, connector=connector, auth=auth, secrets=SecretStore(environ={}), clock=clock,
                         vars={}, paginator_factory=lambda c: registry.get(Kind.PAGINATOR, c.type)(c.options))


async def _walk(transport: HttpTransport, stream: StreamPlan) -> list[str]:
    return [record["trade_id"] async for page in transport.pages(stream) for record in page.records]


def test_after_the_cooldown_one_probe_goes_through_and_closes_the_breaker(
        sandbox_vendor_factory: SandboxFactory) -> None:
    # Requests 1 and 2 fail and open the breaker; the probe (3) is throttled, which leaves the
    # breaker half-open, and the next attempt probes again and succeeds.
    vendor = sandbox_vendor_factory(trades=30, faults=["503:at=1+2", "429:at=3,retry_after=0"])
    clock = FakeClock()  # backoff sleeps and the cooldown pass on this clock, not the real one
    stream = StreamPlan(name="trades", method="GET", path="/api/v2/trades", params={"limit": 10}, headers={},
                        body=None, records="$.trades", concurrency=1, timeout=TimeoutPolicy(),
                        paginator=ComponentPlan(type="cursor", options={"cursor": "$.next_cursor"}),
                        retry=RetryPolicy(max_attempts=5, initial=0.01, jitter="none"),
                        breaker=BreakerPolicy(failure_threshold=2, cooldown=60))

    async def scenario() -> tuple[list[str], list[tuple[str, str]], int]:
        async with _transport(vendor.base_url, clock, stream) as transport:
            with pytest.raises(CircuitOpen, match="circuit open for GET .*/api/v2/trades: 2 failures in a row"):
                await _walk(transport, stream)
            clock.advance(59.9)
            with pytest.raises(CircuitOpen):  # still cooling down: not sent
                await _walk(transport, stream)
            requests_while_open = vendor.stats()["data_requests"]
            clock.advance(0.1)
            ids = await _walk(transport, stream)  # its first request is the probe
            moves = [(t.from_state, t.to_state) for t in transport.breakers.transitions]
            return ids, moves, requests_while_open

    ids, moves, requests_while_open = asyncio.run(scenario())

    assert requests_while_open == 2
    assert ids == [f"ACME-T-{i:07d}" for i in range(1, 31)]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert vendor.stats()["data_requests"] == 2 + 1 + 3
    assert clock.sleeps == [0.01, 0.02, 0.0]  # two backoffs, then the throttled probe's Retry-After: 0


# --- request quota -----------------------------------------------------------------------------

def test_a_rate_limit_spaces_the_requests_out(etrmflow_project: EtrmflowProject,
                                              sandbox_vendor_factory: SandboxFactory) -> None:
    policy = FAST_RETRY + "  rate_limit: {requests: 3, per: 0.5s}\n"
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, policy=policy)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    limited = project.pipeline_result()["duration_s"]
    # 7 requests, 3 per 0.5 s: requests 4 and 7 each wait for a full window.
    assert limited >= 1.0, limited
    assert_every_trade_once(project, vendor, pages=PAGES)
    sandbox_project(project, vendor, auth=KEY)  # the same run without a quota
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    unlimited = project.pipeline_result()["duration_s"]
    assert unlimited * 2 < limited, (unlimited, limited)


# --- idempotent POST ---------------------------------------------------------------------------

INSTRUCTIONS = {
    "contracts/instruction_receipt.yml": """
        name: instruction_receipt
        version: "1.0.0"
        primary_key: [idempotency_key]
        schema:
          type: object
          required: [accepted]
          properties:
            accepted: {type: integer, minimum: 1}
            idempotency_key: {type: [string, "null"]}
    """,
    "pipelines/instructions.yml": """
        name: instructions
        source: {connector: vendor, stream: instructions}
        contract: instruction_receipt
    """,
}


def instructions_project(project: EtrmflowProject, vendor: ThreadedSandbox, *, key_header: bool) -> EtrmflowProject:
    header = "    idempotency_key_header: Idempotency-Key\n" if key_header else ""
    project.write({**INSTRUCTIONS, "connectors/vendor.yml": (
        "name: vendor\n"
        "base_url: \"{{ env_var('SANDBOX_URL') }}\"\n"
        f"auth: {KEY}\n"
        f"{FAST_RETRY}"
        "streams:\n"
        "  instructions:\n"
        "    method: POST\n"
        "    path: /api/v2/settlement-instructions\n"
        "    body: {instruction: release, settlement_id: ACME-S-0000001}\n"
        "    records: $\n"
        f"{header}")})
    project.env["SANDBOX_URL"] = vendor.base_url
    return project


def test_a_post_with_an_idempotency_key_is_retried_and_applied_once(etrmflow_project: EtrmflowProject,
                                                                     sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(faults=["503:at=1"])
    project = instructions_project(etrmflow_project, vendor, key_header=True)

    result, retries = run(project, "pipelines/instructions.yml")

    assert result.exit_code == 0, result.output
    assert [(method, path, attempt) for method, path, attempt, _, _ in retries] == [
        ("POST", "/api/v2/settlement-instructions", "2")]
    rows = project.query("SELECT accepted, idempotency_key FROM instructions")
    assert len(rows) == 1 and rows[0][0] == 1 and re.fullmatch(r"[0-9a-f]{32}", rows[0][1]), rows
    stats = vendor.stats()
    assert (stats["data_requests"], stats["instructions_accepted"], stats["faults_injected"]) == (2, 1, {"503": 1})

    rerun, _ = run(project, "pipelines/instructions.yml")  # the same key again: replayed, not re-applied

    assert rerun.exit_code == 0, rerun.output
    assert (vendor.stats()["data_requests"], vendor.stats()["instructions_accepted"]) == (3, 1)
    assert project.query("SELECT accepted, idempotency_key FROM instructions") == rows


def test_a_post_without_an_idempotency_key_is_not_retried(etrmflow_project: EtrmflowProject,
                                                          sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(faults=["503:at=1"])
    project = instructions_project(etrmflow_project, vendor, key_header=False)

    result, retries = run(project, "pipelines/instructions.yml")

    assert (result.exit_code, retries) == (1, [])
    assert re.fullmatch(r"POST http://127\.0\.0\.1:\d+/api/v2/settlement-instructions answered 503 \(POST is not "
                        r"idempotent and declares no idempotency key, so it is not retried\)",
                        project.pipeline_result()["error"]), project.pipeline_result()["error"]
    assert (vendor.stats()["data_requests"], vendor.stats()["instructions_accepted"]) == (1, 0)


# --- response rules ----------------------------------------------------------------------------

def rules(*lines: str) -> str:
    return FAST_RETRY + "response_rules:\n" + "".join(f"  - {line}\n" for line in lines)


def test_a_retry_rule_retries_an_error_behind_a_200(etrmflow_project: EtrmflowProject,
                                                    sandbox_vendor_factory: SandboxFactory) -> None:
    policy = rules("{path: $.error.code, equals: E_BACKEND, action: retry, message: backend busy}")
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "error-body:at=2", policy=policy)

    result, retries = run(project)

    assert result.exit_code == 0, result.output
    [(_, path, attempt, wait, reason)] = retries
    assert (path, attempt, wait) == ("/api/v2/trades", "2", "0.01")
    assert reason.endswith("/api/v2/trades?limit=10&cursor=NzoxMA answered 200 matching a response rule (backend busy): "
                           '{"error":{"code":"E_BACKEND","message":"backend temporarily unavailable, try again"}}')
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 1)


def test_a_fail_rule_fails_at_once_with_its_message(etrmflow_project: EtrmflowProject,
                                                    sandbox_vendor_factory: SandboxFactory) -> None:
    policy = rules("{path: $.error, action: fail, message: the vendor's backend is down}")
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "error-body:at=2", policy=policy)

    result, retries = run(project)

    assert (result.exit_code, retries) == (1, [])
    error = project.pipeline_result()["error"]
    assert re.fullmatch(r"GET http://127\.0\.0\.1:\d+/api/v2/trades\?limit=10&cursor=NzoxMA answered 200 matching "
                        r"a response rule \(the vendor's backend is down\): \{\"error\":\{\"code\":\"E_BACKEND\".*",
                        error), error
    assert project.pipeline_result()["counts"]["pages"] == 1
    assert vendor.stats()["data_requests"] == 2


def test_a_no_data_rule_turns_a_404_into_an_empty_result(etrmflow_project: EtrmflowProject,
                                                         sandbox_vendor_factory: SandboxFactory) -> None:
    policy = rules("{status: 404, action: no_data, message: no trades for this day}")
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, policy=policy,
                            path="/api/v2/trades/2025-03-30")

    result, retries = run(project)

    assert (result.exit_code, retries) == (0, []), result.output
    outcome = project.pipeline_result()
    assert outcome["error"] is None and outcome["status"] == "success", outcome
    counts = outcome["counts"]
    assert (counts["pages"], counts["fetched"], counts["written"], counts["quarantined"]) == (1, 0, 0, 0)
    assert project.dead_letters("trades") == []
    assert vendor.stats()["data_requests"] == 1
    assert vendor.stats()["requests"] == {"(no route)": 1}


def test_a_rule_on_an_error_status_and_body_applies_before_the_retry_policy(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    # 503 is in retry.on_status, but the rule comes first: this 503 body means maintenance.
    policy = rules("{status: 503, path: $.error, equals: service_unavailable, action: fail, message: maintenance}")
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "503:at=2", policy=policy)

    result, retries = run(project)

    assert (result.exit_code, retries) == (1, [])
    assert project.pipeline_result()["error"].endswith(
        '/api/v2/trades?limit=10&cursor=NzoxMA answered 503 matching a response rule (maintenance): '
        '{"error":"service_unavailable"}')
    assert vendor.stats()["data_requests"] == 2


def test_rules_are_checked_in_the_order_written(etrmflow_project: EtrmflowProject,
                                                sandbox_vendor_factory: SandboxFactory) -> None:
    no_data = "{status: 404, path: $.error, equals: not_found, action: no_data}"
    fail = "{status: 404, action: fail, message: unknown endpoint}"
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, policy=rules(no_data, fail),
                            path="/api/v2/trades/2025-03-30")

    first_match_is_no_data, _ = run(project)
    sandbox_project(project, vendor, auth=KEY, policy=rules(fail, no_data), path="/api/v2/trades/2025-03-30")
    first_match_is_fail, _ = run(project)

    assert first_match_is_no_data.exit_code == 0, first_match_is_no_data.output
    assert first_match_is_fail.exit_code == 1
    assert project.pipeline_result()["error"].endswith(
        '/api/v2/trades/2025-03-30?limit=10 answered 404 matching a response rule (unknown endpoint): '
        '{"error":"not_found"}')
    assert vendor.stats()["data_requests"] == 2


def test_throttling_does_not_open_the_breaker(etrmflow_project: EtrmflowProject,
                                              sandbox_vendor_factory: SandboxFactory) -> None:
    # Three 429s in a row with a breaker that opens after two failures: a throttled vendor is
    # not an unwell one, so Retry-After is honoured and the run completes.
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "429:at=2,burst=3,retry_after=0.01",
                            policy=BREAKER_POLICY)

    result, retries = run(project)

    assert result.exit_code == 0, result.output
    assert [(attempt, wait) for _, _, attempt, wait, _ in retries] == [("2", "0.01"), ("3", "0.01"), ("4", "0.01")]
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 3)
    assert project.pipeline_result()["breaker_transitions"] == []


def test_throttling_that_outlasts_the_retries_counts_against_the_endpoint(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    policy = FAST_RETRY + "  breaker: {failure_threshold: 1}\n"
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "429:at=2,burst=10,retry_after=0.01",
                            policy=policy)

    result, retries = run(project)

    assert (result.exit_code, len(retries)) == (1, 3)
    assert project.pipeline_result()["error"].startswith("gave up after 4 attempts: GET ")
    assert [(t["from"], t["to"], t["reason"]) for t in project.pipeline_result()["breaker_transitions"]] == [
        ("closed", "open", "1 consecutive failures")]
    assert vendor.stats()["data_requests"] == 1 + 4
