"""Fetching, pagination and resume at the edges: no vendor record is skipped or loaded
twice, and no run reports success after stopping early. Real HTTP over loopback, against the
sandbox vendor (and, where the sandbox cannot misbehave that way, a tiny loopback vendor)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etrmflow.sandbox import SandboxConfig, ThreadedSandbox
from etrmflow.sandbox.data import settlement_date, settlement_id, trade
from etrmflow.testing import (
    EtrmflowProject,
    ExpectedRecords,
    SandboxFactory,
    ScriptedRequest,
    ScriptedVendor,
    expected_settlements,
    expected_trades,
)

from . import (
    FAST_RETRY,
    PIPELINE,
    REPO,
    TRADES,
    assert_every_trade_once,
    connector_yaml,
    kill_mid_run,
    sandbox_project,
)

KEY = "{type: api_key, in: header, name: X-API-Key, value: sandbox-key}"


def _pages(trades: int, size: int) -> int:
    """Pages holding records: at least one (an empty dataset still answers one page)."""
    return max(1, -(-trades // size))


# name: (stream options for a page size, pages fetched for (trades, size))
PAGINATORS: dict[str, tuple[Any, Any]] = {
    "cursor": (lambda size: {"path": "/api/v2/trades", "params": f"{{limit: {size}}}", "records": "$.trades",
                                 "paginator": "{type: cursor, cursor: $.next_cursor, param: cursor}"},
               _pages),
    "page_number_has_more": (lambda size: {"path": "/api/v2/trades/pages", "params": f"{{page_size: {size}}}",
                                               "records": "$.data",
                                               "paginator": "{type: page_number, has_more: $.next_page}"},
                             _pages),
    "page_number_total_pages": (lambda size: {"path": "/api/v2/trades/pages", "params": f"{{page_size: {size}}}",
                                                  "records": "$.data",
                                                  "paginator": "{type: page_number, total_pages: $.total_pages}"},
                                _pages),
    # No flag, no total: the trailing empty page ends the walk (and is fetched).
    "page_number_empty_page": (lambda size: {"path": "/api/v2/trades/pages", "params": f"{{page_size: {size}}}",
                                                 "records": "$.data", "paginator": "{type: page_number}"},
                               lambda trades, size: -(-trades // size) + 1),
    "offset_total": (lambda size: {"path": "/api/v2/trades/offset", "params": "{}", "records": "$.items",
                                       "paginator": f"{{type: offset, limit: {size}, total: $.total}}"},
                     _pages),
    "offset_empty_page": (lambda size: {"path": "/api/v2/trades/offset", "params": "{}", "records": "$.items",
                                            "paginator": f"{{type: offset, limit: {size}}}"},
                          lambda trades, size: -(-trades // size) + 1),
    "next_link_body": (lambda size: {"path": "/api/v2/trades/links", "params": f"{{page_size: {size}}}",
                                         "records": "$.trades", "paginator": "{type: next_link, in: body, path: $.links}"},
                       _pages),
    "next_link_header": (lambda size: {"path": "/api/v2/trades/link-header", "params": f"{{per_page: {size}}}",
                                           "records": "$", "paginator": "{type: next_link, in: header}"},
                         _pages),
}


def _project(project: EtrmflowProject, vendor: ThreadedSandbox, name: str, size: int) -> EtrmflowProject:
    return sandbox_project(project, vendor, auth=KEY, **PAGINATORS[name][0](size))


# --- page-size boundaries ----------------------------------------------------------------------

@pytest.mark.parametrize("trades,size", [(60, 10), (10, 10), (5, 1), (7, 1000)],
                         ids=["last_page_exactly_full", "one_full_page", "page_size_1", "one_short_page"])
@pytest.mark.parametrize("name", sorted(PAGINATORS))
def test_every_paginator_at_the_page_size_boundaries(name: str, trades: int, size: int,
                                                     etrmflow_project: EtrmflowProject,
                                                     sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=trades)
    project = _project(etrmflow_project, vendor, name, size)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert_every_trade_once(project, vendor, pages=PAGINATORS[name][1](trades, size))


# --- faults on the first and the last page -----------------------------------------------------

@pytest.mark.parametrize("fault", ["503:at={n},burst=2", "429:at={n},retry_after=0.2"], ids=["503x2", "429"])
@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize("name", sorted(PAGINATORS))
def test_a_fault_on_the_first_or_last_page_is_retried_and_loses_nothing(
        name: str, where: str, fault: str, etrmflow_project: EtrmflowProject,
        sandbox_vendor_factory: SandboxFactory) -> None:
    pages = PAGINATORS[name][1](TRADES, 10)
    spec = fault.format(n=1 if where == "first" else pages)
    vendor = sandbox_vendor_factory(trades=TRADES, faults=[spec])
    project = _project(etrmflow_project, vendor, name, 10)

    began = time.monotonic()
    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    failed = 2 if spec.startswith("503") else 1
    assert_every_trade_once(project, vendor, pages=pages, data_requests=pages + failed)
    assert project.pipeline_result()["counts"]["retries"] == failed
    if spec.startswith("429"):
        assert time.monotonic() - began >= 0.2  # Retry-After was honoured, not the 10 ms backoff


# --- kill -9 at different pages, then --resume -------------------------------------------------

def _table(root: Path) -> list[tuple[Any, ...]]:
    """What a clean run and a resumed one must agree on, batch ids included (a batch id names
    the page a row came from: a resumed walk must number its pages as a clean one does)."""
    project = EtrmflowProject(root)
    rows = project.query("SELECT trade_id, version, price, volume_mwh, delivery_start, _etrmflow_batch_id "
                         "FROM trades")
    letters = sorted((letter["record"]["trade_id"], letter["record_sha256"]) for letter in project.dead_letters("trades"))
    return [*sorted(rows), *letters]


@pytest.mark.parametrize("killed_after", [1, 6])
@pytest.mark.parametrize("name", sorted(PAGINATORS))
def test_kill_9_then_resume_with_a_fault_on_the_next_page_matches_a_clean_run(
        name: str, killed_after: int, tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=[f"slow:at={killed_after + 1},delay=30"])
    for folder in ("killed", "clean"):
        _project(EtrmflowProject(tmp_path / folder), vendor, name, 10)
    env = {**os.environ, "SANDBOX_URL": vendor.base_url, "PYTHONPATH": str(REPO)}
    kill_mid_run(tmp_path / "killed", env, pages=killed_after)
    vendor.reset()
    vendor.set_faults(["503:at=1,burst=2"])  # the first page after the resume point fails twice

    killed = EtrmflowProject(tmp_path / "killed", env={"SANDBOX_URL": vendor.base_url})
    resumed = killed.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    pages = PAGINATORS[name][1](TRADES, 10)
    result = killed.pipeline_result()
    assert result["resumed_from_page"] == killed_after
    assert result["counts"]["pages"] == pages - killed_after
    assert vendor.stats()["data_requests"] == pages - killed_after + 2
    assert vendor.stats()["records_served"] == TRADES - 10 * killed_after
    vendor.set_faults([])
    clean = EtrmflowProject(tmp_path / "clean", env={"SANDBOX_URL": vendor.base_url})
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    assert _table(tmp_path / "killed") == _table(tmp_path / "clean")
    clean.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")
    killed.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")


# --- a 200 that carries an error instead of the page ------------------------------------------

@pytest.mark.parametrize("name", ["next_link_header", "cursor"])
def test_an_error_body_with_status_200_mid_walk_fails_the_run(name: str, etrmflow_project: EtrmflowProject,
                                                              sandbox_vendor_factory: SandboxFactory) -> None:
    """Page 3 answers ``200 {"error": {...}}``. On a stream whose records are the body itself
    (``records: $``, a top-level array), that object must not pass for one record on a last
    page: that would end the walk with 45 of 65 trades never loaded, and report success."""
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["error-body:at=3"])
    project = _project(etrmflow_project, vendor, name, 10)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    outcome = project.pipeline_result()
    assert outcome["status"] == "failed"
    assert outcome["counts"]["pages"] == 2 and outcome["counts"]["fetched"] == 20
    assert outcome["missing"].startswith("pages after page 2 ")
    assert "error" in outcome["error"] and "records" in outcome["error"]
    vendor.reset()
    vendor.set_faults([])
    assert project.run("run", "--resume", "pipelines/trades.yml").exit_code == 0
    assert project.pipeline_result()["counts"]["pages"] == vendor.stats()["data_requests"] == 5  # pages 3 to 7
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")


# --- the in-process sandbox (a new port every run) and next links ------------------------------

def test_kill_9_then_resume_a_next_link_walk_against_an_in_process_sandbox(tmp_path: Path) -> None:
    """``base_url: sandbox://...`` starts the vendor on a free port in each run. The checkpoint of
    a next-link walk holds an absolute link: the resumed run must follow it to its own vendor,
    not to the port of the killed run's (now gone) vendor."""
    url = "sandbox://acme?trades=65&fault=slow:at=5,delay=30"  # the resumed run makes 3 requests
    project = EtrmflowProject(tmp_path / "killed")
    project.write({"etrmflow.yml": "name: killed\n"})
    stream = PAGINATORS["next_link_body"][0](10)
    project.write({"connectors/vendor.yml": connector_yaml(auth=KEY, **stream), "pipelines/trades.yml": PIPELINE})
    project.copy_from(REPO, "contracts")
    env = {**os.environ, "SANDBOX_URL": url, "PYTHONPATH": str(REPO)}
    kill_mid_run(tmp_path / "killed", env, pages=4)

    resumed = project.run("run", "--resume", "pipelines/trades.yml", env={"SANDBOX_URL": url})

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result()["resumed_from_page"] == 4
    assert project.pipeline_result()["counts"]["pages"] == 3
    project.assert_loaded_exactly(expected_trades(SandboxConfig(trades=TRADES)), table="trades", pipeline="trades")


# --- a vendor that loops -----------------------------------------------------------------------

def _looping(request: ScriptedRequest) -> dict[str, Any]:
    """Three pages of two trades; the third page points back to the second (a cursor seen
    before, or a next link to an earlier page)."""
    page = int(request.query.get("cursor", request.query.get("page", "1")))
    following = {1: "2", 2: "3", 3: "2"}[page]
    trades = [trade(i, 7) for i in range(2 * page - 2, 2 * page)]
    if request.path == "/cursor":
        return {"trades": trades, "next_cursor": following}
    return {"trades": trades, "links": [{"rel": "next", "href": f"/links?page={following}"}]}


@pytest.fixture
def looping_vendor(scripted_vendor: Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]) -> str:
    return scripted_vendor(_looping).url


@pytest.mark.parametrize("path,paginator,looped", [
    ("/cursor", "{type: cursor, cursor: $.next_cursor}", "cursor '2' was already seen"),
    ("/links", "{type: next_link, in: body, path: $.links}", "/links?page=2 was already seen"),
])
def test_a_vendor_that_loops_fails_the_run_loudly(path: str, paginator: str, looped: str, looping_vendor: str,
                                                  etrmflow_project: EtrmflowProject) -> None:
    etrmflow_project.write({"pipelines/trades.yml": PIPELINE, "connectors/vendor.yml": connector_yaml(
        path=path, records="$.trades", paginator=paginator)})
    etrmflow_project.copy_from(REPO, "contracts")

    result = etrmflow_project.run("run", "pipelines/trades.yml", env={"SANDBOX_URL": looping_vendor})

    assert result.exit_code == 1, result.output
    outcome = etrmflow_project.pipeline_result()
    assert outcome["status"] == "failed" and outcome["error_type"] == "PaginationError"
    assert looped in outcome["error"] and "the vendor is looping" in outcome["error"]
    # Pages 1 and 2 are committed; the third, whose next points back, is not: nothing is doubled.
    assert outcome["counts"]["pages"] == 2 and outcome["counts"]["fetched"] == 4
    assert outcome["resumable"] is not False and outcome["missing"].startswith("pages after page 2 ")
    assert sorted(etrmflow_project.query("SELECT trade_id FROM trades")) == [
        ("ACME-T-0000001",), ("ACME-T-0000002",), ("ACME-T-0000003",), ("ACME-T-0000004",)]


# --- date windows: resume mid-window, across a clock change ------------------------------------

SETTLEMENTS = 3650
"""About ten settlements a day over 2025, so a daily window holds several pages."""


def _windowed(root: Path, vendor: ThreadedSandbox) -> EtrmflowProject:
    project = EtrmflowProject(root)
    project.write({"etrmflow.yml": f"name: {root.name}\n", "pipelines/settlements.yml": (
        "name: settlements\nsource: {connector: vendor, stream: settlements}\ncontract: settlement\n"),
        "connectors/vendor.yml": (
        "name: vendor\n"
        "base_url: \"{{ env_var('SANDBOX_URL') }}\"\n"
        f"auth: {KEY}\n"
        f"{FAST_RETRY}"
        "streams:\n"
        "  settlements:\n"
        "    path: /api/v2/settlements\n"
        "    params: {start_date: \"{{ window.start }}\", end_date: \"{{ window.end }}\", page_size: 2}\n"
        "    records: $.results\n"
        "    paginator: {type: page_number, has_more: $.next_page}\n"
        # Berlin: 2025-10-26 has 25 hours; the last window is cut short at the end.
        "    windows: {start: 2025-10-24, end: 2025-10-28, step: P1D, tz: Europe/Berlin}\n")})
    project.copy_from(REPO, "contracts")
    project.env["SANDBOX_URL"] = vendor.base_url
    return project


def _requests_per_day(vendor: ThreadedSandbox) -> list[int]:
    days = [settlement_date(i, vendor.config.seed) for i in range(vendor.config.settlements)]
    return [max(1, -(-days.count(f"2025-10-{day}") // 2)) for day in (24, 25, 26, 27)]


def _settlement_rows(root: Path) -> list[tuple[Any, ...]]:
    project = EtrmflowProject(root)
    rows = project.query("SELECT settlement_id, settlement_date, amount, status, _etrmflow_batch_id FROM settlements")
    letters = sorted((letter["record"]["settlement_id"], letter["record_sha256"])
                     for letter in project.dead_letters("settlements"))
    return [*sorted(rows), *letters]


@pytest.mark.parametrize("where", ["inside_the_window", "at_its_start"])
def test_kill_9_in_the_window_of_the_autumn_clock_change_then_resume_matches_a_clean_run(
        where: str, tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(settlements=SETTLEMENTS)
    per_day = _requests_per_day(vendor)
    assert per_day[2] >= 3  # the 25-hour day has several pages: the kill lands inside it
    # Either the first page of 2025-10-26 is committed, or the last page of the window before.
    first = 1 if where == "inside_the_window" else 0
    vendor.set_faults([f"slow:at={per_day[0] + per_day[1] + first + 1},delay=30"])
    killed, clean = _windowed(tmp_path / "killed", vendor), _windowed(tmp_path / "clean", vendor)
    env = {**os.environ, "SANDBOX_URL": vendor.base_url, "PYTHONPATH": str(REPO)}
    if first:
        state = _kill_when(tmp_path / "killed", env, lambda s: s["window"] == 2 and s["pages_done"] == 1)
        assert state["window_label"] == "2025-10-26T00:00:00+02:00/2025-10-27T00:00:00+01:00"
    else:
        state = _kill_when(tmp_path / "killed", env, lambda s: s["window"] == 1 and s["next_request"] is None)
        assert state["window_label"] == "2025-10-25T00:00:00+02:00/2025-10-26T00:00:00+02:00"
    vendor.reset()
    vendor.set_faults(["503:at=1,burst=2"])  # the page after the resume point fails twice first

    resumed = killed.run("run", "--resume", "pipelines/settlements.yml")

    assert resumed.exit_code == 0, resumed.output
    outcome = killed.pipeline_result()
    assert outcome["counts"]["pages"] == per_day[2] - first + per_day[3]
    assert vendor.stats()["data_requests"] == per_day[2] - first + per_day[3] + 2
    vendor.set_faults([])
    assert clean.run("run", "pipelines/settlements.yml").exit_code == 0
    assert clean.pipeline_result()["counts"]["pages"] == sum(per_day)
    assert _settlement_rows(tmp_path / "killed") == _settlement_rows(tmp_path / "clean")
    wanted = {f"2025-10-{day}" for day in (24, 25, 26, 27)}
    in_range = {i for i in range(SETTLEMENTS) if settlement_date(i, vendor.config.seed) in wanted}
    everything = expected_settlements(vendor.config)
    ids = {settlement_id(i) for i in in_range}
    killed.assert_loaded_exactly(ExpectedRecords(
        valid=everything.valid & ids, invalid={k: v for k, v in everything.invalid.items() if k in ids}),
        table="settlements", pipeline="settlements", id_field="settlement_id")


def _kill_when(root: Path, env: dict[str, str], ready: Any) -> dict[str, Any]:
    """Run the settlements pipeline as a child process; kill -9 it once its checkpoint is ``ready``."""
    process = subprocess.Popen([sys.executable, "-m", "etrmflow", "run", "pipelines/settlements.yml"], cwd=root,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = root / "target/state/settlements.json"
    deadline = time.monotonic() + 30
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if ready(state):
                break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert ready(json.loads(state_file.read_text())), state
    return json.loads(state_file.read_text())


@pytest.mark.parametrize("name", ["cursor", "next_link_body", "offset_total"])
def test_kill_9_then_a_resume_that_fails_then_another_resume_loads_every_trade_once(
        name: str, tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["slow:at=3,delay=30"])
    project = _project(EtrmflowProject(tmp_path / "project"), vendor, name, 10)
    kill_mid_run(tmp_path / "project", {**os.environ, "SANDBOX_URL": vendor.base_url, "PYTHONPATH": str(REPO)},
                 pages=2)
    vendor.reset()
    vendor.set_faults(["503:at=3,burst=20"])  # the first resume gets pages 3 and 4, then gives up on 5

    failed = project.run("run", "--resume", "pipelines/trades.yml")

    assert failed.exit_code == 1, failed.output
    assert project.pipeline_result()["missing"].startswith("pages after page 4 ")
    vendor.reset()
    vendor.set_faults([])
    again = project.run("run", "--resume", "pipelines/trades.yml")
    assert again.exit_code == 0, again.output
    assert project.pipeline_result()["resumed_from_page"] == 4
    assert project.pipeline_result()["counts"]["pages"] == vendor.stats()["data_requests"] == 3
    assert vendor.stats()["records_served"] == TRADES - 40
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")
    batches = project.query("SELECT COUNT(DISTINCT _etrmflow_batch_id) FROM trades")
    assert batches == [(7,)]  # one batch per page: no page was written under two numbers
