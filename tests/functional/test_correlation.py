"""Correlation ids: each vendor request (with its retries) has one id, sent as `X-Request-ID`,
carried as `correlation_id` by every JSON log line about it, and recorded in its page's audit entry."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from etrmflow.sandbox import SandboxConfig, ThreadedSandbox, parse_faults
from etrmflow.sandbox.server import SandboxServer
from etrmflow.testing import CliResult, EtrmflowProject

from . import FAST_RETRY, TRADES, sandbox_project

ID = re.compile(r"[0-9a-f]{12}")
REQUEST_LOGGERS = ("etrmflow.http", "etrmflow.breaker")
HEADER_KEY = "{type: api_key, in: header, name: X-API-Key, value: sandbox-key}"


class RecordingSandbox(ThreadedSandbox):
    """The sandbox, noting the X-Request-ID and the status of every data request it answers."""

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.seen: list[tuple[str | None, int]] = []

    async def _make_server(self) -> SandboxServer:
        server = await super()._make_server()

        async def note(request: web.Request, response: web.StreamResponse) -> None:
            if request.path.startswith("/api/"):
                self.seen.append((request.headers.get("X-Request-ID"), response.status))

        server.app.on_response_prepare.append(note)
        return server


def recording_vendor(faults: list[str]) -> RecordingSandbox:
    vendor = RecordingSandbox(SandboxConfig(trades=TRADES, faults=parse_faults(faults)))
    vendor.start()
    return vendor


def page_entries(project: EtrmflowProject) -> list[dict[str, Any]]:
    entries = [orjson.loads(line) for line in project.path("target/audit/audit.jsonl").read_bytes().splitlines()]
    return [e for e in entries if e["event"] == "page_fetched"]


def request_lines(result: CliResult) -> list[dict[str, Any]]:
    lines = result.json_logs()
    assert all(line["ts"].endswith("Z") and line["run_id"] and line["level"] and line["event"] for line in lines)
    return [line for line in lines if line["logger"] in REQUEST_LOGGERS]


def test_a_retried_request_keeps_its_id_in_logs_header_and_audit(etrmflow_project: EtrmflowProject) -> None:
    vendor = recording_vendor(["503:at=2"])
    try:
        project = sandbox_project(etrmflow_project, vendor, auth=HEADER_KEY)
        result = project.run("--log-format", "json", "--log-level", "debug", "run", "pipelines/trades.yml")
    finally:
        vendor.stop()

    assert result.exit_code == 0, result.output
    about_requests = request_lines(result)
    assert about_requests and all(ID.fullmatch(line["correlation_id"]) and line["pipeline"] == "trades"
                                  for line in about_requests)
    retry = next(line for line in about_requests if line["event"].startswith("retrying"))
    pages = page_entries(project)
    assert [p["attempts"] for p in pages] == [1, 2, 1, 1, 1, 1, 1]
    assert retry["correlation_id"] == pages[1]["correlation_id"]
    assert f"[request {retry['correlation_id']}]" in retry["event"]
    # The vendor saw each page's id on every attempt for it: two for the page that was retried.
    ids = [p["correlation_id"] for p in pages]
    assert vendor.seen == [(ids[0], 200), (ids[1], 503), (ids[1], 200)] + [(i, 200) for i in ids[2:]]
    page_lines = {line["event"]: line["correlation_id"] for line in result.json_logs()
                  if line["event"].startswith("page ")}
    assert page_lines == {f"page {p['page']} of trades: {p['records']} records, "
                          f"{p_quarantined} quarantined": p["correlation_id"]
                          for p, p_quarantined in zip(pages, quarantined_per_page(project))}


def quarantined_per_page(project: EtrmflowProject) -> list[int]:
    entries = [orjson.loads(line) for line in project.path("target/audit/audit.jsonl").read_bytes().splitlines()]
    return [e["quarantined"] for e in entries if e["event"] == "batch_validated"]


def test_every_line_about_a_failed_request_names_it(etrmflow_project: EtrmflowProject) -> None:
    vendor = recording_vendor(["503:at=2,burst=9"])
    policy = FAST_RETRY + "  breaker: {failure_threshold: 3, cooldown: 60s}\n"
    try:
        project = sandbox_project(etrmflow_project, vendor, auth=HEADER_KEY, policy=policy)
        result = project.run("--log-format", "json", "run", "pipelines/trades.yml")
    finally:
        vendor.stop()

    assert result.exit_code == 1, result.output
    lines = result.json_logs()
    failing = {id_ for id_, status in vendor.seen if status == 503}
    assert len(failing) == 1
    (failed_id,) = failing
    about_it = [line for line in lines if line.get("correlation_id") == failed_id]
    # Three attempts reach the vendor; the third failure opens the breaker, so the fourth fails fast.
    assert [(line["logger"], line["level"]) for line in about_it] == [
        ("etrmflow.http", "warning"), ("etrmflow.http", "warning"), ("etrmflow.breaker", "warning"),
        ("etrmflow.http", "warning"), ("etrmflow.run", "error")]
    assert [status for id_, status in vendor.seen if id_ == failed_id] == [503, 503, 503]
    assert about_it[-1]["pipeline"] == "trades" and about_it[-1]["error_type"] == "CircuitOpen"
    assert [line for line in lines if line not in about_it and line["level"] != "info"] == []
    # The page before it was fetched under its own id; the failed request has no page entry.
    assert [p["correlation_id"] for p in page_entries(project)] == [vendor.seen[0][0]]
