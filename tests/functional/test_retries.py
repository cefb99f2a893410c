"""Faults injected by the sandbox vendor, over real HTTP: what is retried, what fails at once."""

from __future__ import annotations

import re

from etrmflow.testing import EtrmflowProject, SandboxFactory

from . import FAST_RETRY, PAGE_SIZE, TRADES, assert_every_trade_once, sandbox_project

PAGES = -(-TRADES // PAGE_SIZE)
KEY = '{type: api_key, in: header, name: X-API-Key, value: sandbox-key}'
RETRY_LINE = re.compile(r"WARNING retrying GET http://127\.0\.0\.1:\d+/api/v2/trades \[request [0-9a-f]{12}\] "
                        r"\(attempt (\d) of 4\) in (\d+\.\d\d)s after: (.*)$")


def run(project: EtrmflowProject) -> tuple[int, list[tuple[str, str, str]]]:
    """Exit code and, for each retry logged, (attempt, wait, reason)."""
    result = project.run("run", "pipelines/trades.yml")
    retries = [match.groups() for line in result.stderr.splitlines() if (match := RETRY_LINE.search(line))]
    return result.exit_code, retries


def start(factory: SandboxFactory, project: EtrmflowProject, *faults: str, policy: str = FAST_RETRY):
    vendor = factory(trades=TRADES, faults=list(faults))
    return vendor, sandbox_project(project, vendor, auth=KEY, policy=policy)


def test_a_503_burst_is_retried_and_every_trade_loaded_once(etrmflow_project: EtrmflowProject,
                                                            sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "503:at=2,burst=2")

    code, retries = run(project)

    assert code == 0
    assert [(attempt, wait) for attempt, wait, _ in retries] == [("2", "0.01"), ("3", "0.02")]
    assert all(reason.endswith("answered 503") for _, _, reason in retries)
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 2)
    assert project.pipeline_result()["counts"]["retries"] == 2
    assert vendor.stats()["faults_injected"] == {"503": 2}


def test_a_429_waits_as_long_as_retry_after_says(etrmflow_project: EtrmflowProject,
                                                 sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "429:at=3,retry_after=0.15")

    code, retries = run(project)

    assert code == 0
    assert [(attempt, wait) for attempt, wait, _ in retries] == [("2", "0.15")]
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 1)
    assert vendor.stats()["faults_injected"] == {"429": 1}


def test_a_retry_after_beyond_the_maximum_fails_fast(etrmflow_project: EtrmflowProject,
                                                     sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "429:at=2,retry_after=300")

    code, retries = run(project)

    assert (code, retries) == (1, [])
    error = project.pipeline_result()["error"]
    assert re.fullmatch(r"GET http://127\.0\.0\.1:\d+/api/v2/trades\?limit=10&cursor=\S+ answered 429 and the "
                        r"vendor asked to wait 300s \(Retry-After\), more than retry\.retry_after\.max \(1s\); "
                        r"try again later or raise the maximum", error), error
    assert vendor.stats()["data_requests"] == 2


def test_a_4xx_is_not_retried(etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=KEY, params="{limit: 5000}")

    code, retries = run(project)

    assert (code, retries) == (1, [])
    assert project.pipeline_result()["error"].endswith(
        '/api/v2/trades?limit=5000 answered 400: {"error":"invalid_parameter","parameter":"limit",'
        '"message":"limit must be between 1 and 1000, got 5000"}')
    assert vendor.stats()["data_requests"] == 1


def test_attempts_run_out_after_max_attempts(etrmflow_project: EtrmflowProject,
                                             sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "503:at=2,burst=10")

    code, retries = run(project)

    assert code == 1
    assert [(attempt, wait) for attempt, wait, _ in retries] == [("2", "0.01"), ("3", "0.02"), ("4", "0.04")]
    error = project.pipeline_result()["error"]
    assert error.startswith("gave up after 4 attempts: GET ") and error.endswith("answered 503")
    assert vendor.stats()["data_requests"] == 1 + 4


# aiohttp itself resends an idempotent request once when a kept-alive connection drops
# (RFC 9112 9.3.1), so it takes two drops in a row to reach our retry policy.
DROP_TWICE = "drop:at=4,burst=2"


def test_a_dropped_connection_is_retried(etrmflow_project: EtrmflowProject,
                                         sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, DROP_TWICE)

    code, retries = run(project)

    assert code == 0
    assert [(attempt, wait) for attempt, wait, _ in retries] == [("2", "0.01")]
    assert re.search(r"answered|connection error: Server disconnected$", retries[0][2]), retries
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 2)


def test_a_dropped_connection_fails_when_the_policy_says_so(etrmflow_project: EtrmflowProject,
                                                            sandbox_vendor_factory: SandboxFactory) -> None:
    policy = FAST_RETRY + "    on_connection_error: false\n"
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, DROP_TWICE, policy=policy)

    code, retries = run(project)

    assert (code, retries) == (1, [])
    assert project.pipeline_result()["error"].endswith(
        "/api/v2/trades?limit=10&cursor=NzozMA failed: connection error: Server disconnected "
        "(not retried: retry.on_connection_error is false)")
    assert vendor.stats()["data_requests"] == 5


def test_a_truncated_body_is_retried(etrmflow_project: EtrmflowProject,
                                     sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "malformed:at=2")

    code, retries = run(project)

    assert code == 0
    assert [(attempt, wait) for attempt, wait, _ in retries] == [("2", "0.01")]
    assert "/api/v2/trades?limit=10&cursor=NzoxMA returned malformed JSON (" in retries[0][2]
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 1)


def test_an_error_body_with_status_200_fails_the_run(etrmflow_project: EtrmflowProject,
                                                     sandbox_vendor_factory: SandboxFactory) -> None:
    vendor, project = start(sandbox_vendor_factory, etrmflow_project, "error-body:at=2")

    code, retries = run(project)

    assert (code, retries) == (1, [])
    assert project.pipeline_result()["error"].startswith("records path $.trades not found in the response from ")
    assert project.pipeline_result()["error"].endswith("(top-level: error); check the stream's records:")
    assert vendor.stats()["data_requests"] == 2
