"""Functional tests: the real CLI, in-process, in a temp project, against the sandbox vendor over
loopback HTTP. Helpers shared by the test modules live here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from etrmflow.sandbox import ThreadedSandbox
from etrmflow.testing import EtrmflowProject, expected_trades

REPO = Path(__file__).resolve().parents[2]
TRADES = 65
"""Sandbox trades in most tests: 7 pages of 10 (the last one short), 3 of them broken (seed 7)."""
PAGE_SIZE = 10

# Tiny waits so retry tests stay fast; Retry-After up to 1 s is honoured.
FAST_RETRY = """\
defaults:
  retry:
    max_attempts: 4
    backoff: {initial: 0.01s, max: 0.05s, jitter: none}
    retry_after: {max: 1s}
"""

CURSOR_STREAM = {"path": "/api/v2/trades", "params": "{limit: 10}", "records": "$.trades",
                 "paginator": "{type: cursor, cursor: $.next_cursor, param: cursor}"}

DEFECT_REASONS = {
    "bad_lei_check_digits": [("/counterparty_lei", "format")],
    "delivery_end_before_start": [("", "rule:delivery_period_positive")],
    "missing_price": [("", "required")],
    "unknown_currency": [("/currency", "format")],
    "negative_volume": [("/volume_mwh", "exclusiveMinimum")],
    "legs_not_summing": [("", "rule:legs_sum_to_total")],
    "naive_timestamp": [("/delivery_start", "format")],
}
"""The (pointer, keyword) the trade contract reports for each defect the sandbox plants."""


def connector_yaml(*, auth: str = "{type: none}", path: str, records: str, paginator: str,
                   params: str = "{}", policy: str = FAST_RETRY) -> str:
    return (f"name: vendor\n"
            f"base_url: \"{{{{ env_var('SANDBOX_URL') }}}}\"\n"
            f"auth: {auth}\n"
            f"{policy}"
            f"streams:\n"
            f"  trades:\n"
            f"    path: {path}\n"
            f"    params: {params}\n"
            f"    records: {records}\n"
            f"    paginator: {paginator}\n")


PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
"""


def sandbox_project(project: EtrmflowProject, vendor: ThreadedSandbox, **stream: Any) -> EtrmflowProject:
    """A one-pipeline project (pipelines/trades.yml -> SQLite table trades) reading ``vendor``."""
    options = {**CURSOR_STREAM, **stream}
    project.write({"connectors/vendor.yml": connector_yaml(**options), "pipelines/trades.yml": PIPELINE})
    project.copy_from(REPO, "contracts")
    project.env["SANDBOX_URL"] = vendor.base_url
    return project


def assert_every_trade_once(project: EtrmflowProject, vendor: ThreadedSandbox, *, pages: int,
                            data_requests: int | None = None) -> None:
    """Table and dead letters hold exactly the sandbox's trades, each once, after ``pages`` pages
    (and ``data_requests`` requests to the vendor's data routes: ``pages`` unless some were retried)."""
    expected = expected_trades(vendor.config)
    project.assert_loaded_exactly(expected, table="trades", pipeline="trades")
    counts = project.pipeline_result("trades")["counts"]
    assert (counts["pages"], counts["fetched"], counts["valid"], counts["quarantined"], counts["written"]) == (
        pages, expected.total, len(expected.valid), len(expected.invalid), len(expected.valid))
    assert vendor.stats()["data_requests"] == (pages if data_requests is None else data_requests)


def kill_mid_run(root: Path, env: dict[str, str], pages: int = 4) -> None:
    """Start ``etrmflow run pipelines/trades.yml`` in ``root`` as a child process and kill -9 it
    once ``pages`` pages are committed (the vendor is expected to hang on the next one)."""
    process = subprocess.Popen([sys.executable, "-m", "etrmflow", "run", "pipelines/trades.yml"], cwd=root,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = root / "target/state/trades.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (state.exists() and json.loads(state.read_text())["pages_done"] >= pages):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert json.loads(state.read_text())["pages_done"] == pages
