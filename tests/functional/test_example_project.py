"""The repository's example project (connectors/, contracts/, pipelines/, run as the README runs
it): every example pipeline runs green on its embedded defaults, loads what the sandbox's data
says it should, computed here with plain Python, and a second run adds nothing."""

from __future__ import annotations

import hashlib
import json
import math
import urllib.request
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from etrmflow.sandbox import SandboxConfig, ThreadedSandbox
from etrmflow.sandbox.data import (
    is_invalid_settlement,
    is_invalid_trade,
    settlement,
    trade,
)
from etrmflow.testing import EtrmflowProject, expected_settlements, expected_trades

from . import REPO

EXAMPLES = ["acme_hourly_positions", "acme_settlement_instructions", "acme_trades"]
TABLES = {"acme_hourly_positions": "hourly_positions", "acme_settlement_instructions": "settlements",
          "acme_trades": "trades"}
INSTRUCTIONS = "http acme_etrm POST /api/v2/settlement-instructions"
HOUR = timedelta(hours=1)
CENT = Decimal("0.01")
BERLIN = ZoneInfo("Europe/Berlin")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LINEAGE = ("_etrmflow_run_id", "_etrmflow_loaded_at")
"""Lineage columns that name the run: the only ones a rerun may change."""


@pytest.fixture
def project(etrmflow_project: EtrmflowProject) -> EtrmflowProject:
    etrmflow_project.copy_from(REPO, "etrmflow.yml", "connectors", "contracts", "pipelines")
    # The connector's defaults start the sandbox vendor in-process; nothing from the shell counts.
    etrmflow_project.env.update(ACME_BASE_URL=None, ACME_CLIENT_ID=None, ACME_CLIENT_SECRET=None)
    return etrmflow_project


def table_contents(project: EtrmflowProject, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table`` without the columns that name the run, sorted."""
    rows = project.rows(table)
    return sorted(tuple((k, v) for k, v in row.items() if k not in LINEAGE) for row in rows)


def bookings(vendor: ThreadedSandbox) -> dict[str, list[dict[str, Any]]]:
    """Every booking of every instruction, numbers exactly as the vendor received them."""
    with NO_PROXY.open(vendor.base_url + "/_sandbox/instructions", timeout=10) as response:
        return json.loads(response.read(), parse_float=Decimal)["instructions"]


def audit(project: EtrmflowProject) -> list[dict[str, Any]]:
    return [json.loads(line) for line in project.path("target/audit/audit.jsonl").read_text().splitlines()]


# --- every example, twice ----------------------------------------------------------------------

def test_every_example_pipeline_runs_green_and_a_rerun_adds_nothing(project: EtrmflowProject) -> None:
    assert sorted(p.stem for p in project.path("pipelines").glob("*.yml")) == EXAMPLES

    first = project.run("run")

    assert first.exit_code == 0, first.output
    results = {p["name"]: p for p in project.run_results()["pipelines"]}
    assert {name: p["status"] for name, p in results.items()} == dict.fromkeys(EXAMPLES, "success")
    after_first = {table: table_contents(project, table) for table in TABLES.values()}
    assert {t: len(rows) for t, rows in after_first.items()} == {
        t: results[name]["counts"]["written"] for name, t in TABLES.items()}

    second = project.run("run")

    assert second.exit_code == 0, second.output
    again = {p["name"]: p for p in project.run_results()["pipelines"]}
    assert {name: p["status"] for name, p in again.items()} == dict.fromkeys(EXAMPLES, "success")
    assert {name: p["counts"]["dead_letters_new"] for name, p in again.items()} == dict.fromkeys(EXAMPLES, 0)
    assert {table: table_contents(project, table) for table in TABLES.values()} == after_first


# --- acme_hourly_positions ---------------------------------------------------------------------

def _latest_valid_trades(config: SandboxConfig) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for i in range(config.trades):
        if is_invalid_trade(i, config.seed) is None:
            record = trade(i, config.seed)
            kept = latest.get(record["trade_id"])
            if kept is None or (kept["version"], kept["updated_at"]) <= (record["version"], record["updated_at"]):
                latest[record["trade_id"]] = record
    return list(latest.values())


def _periods(record: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """(start, end, MWh, price) of each leg, or of the whole trade when it has none."""
    legs = record.get("legs") or [record]
    return [(leg["delivery_start"], leg["delivery_end"], leg["volume_mwh"], leg["price"]) for leg in legs]


def expected_positions(config: SandboxConfig) -> tuple[dict[tuple[str, ...], dict[str, Any]],
                                                       dict[tuple[str, ...], Decimal]]:
    """Per (commodity, product, currency, UTC hour): net MWh, value and trade count; and per
    (commodity, product, currency) the exact total value, straight from the sandbox's data."""
    hours: dict[tuple[str, ...], dict[str, Any]] = defaultdict(lambda: {"net_mwh": 0.0, "value": 0.0, "trades": 0})
    totals: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for record in _latest_valid_trades(config):
        if record["product_code"] == "GB-HH":
            continue
        pence = record["currency"] == "GBX"
        currency = "GBP" if pence else record["currency"]
        sign = 1 if record["buy_sell"] == "B" else -1
        product = (record["commodity"], record["product_code"], currency)
        for start_text, end_text, mwh, price in _periods(record):
            start, end = datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)
            count = (end - start) // HOUR
            exact_price = Decimal(repr(price)) / (100 if pence else 1)
            value = (exact_price * Decimal(repr(sign * mwh))).quantize(CENT, ROUND_HALF_EVEN)
            totals[product] += value
            for n in range(count):
                hour = hours[(*product, (start + n * HOUR).astimezone(ZoneInfo("UTC")).isoformat())]
                hour["net_mwh"] += sign * mwh / count
                hour["value"] += float(value) / count
                hour["trades"] += 1
    return hours, totals


def test_hourly_positions_are_the_sandbox_trades_hour_by_hour(project: EtrmflowProject) -> None:
    result = project.run("run", "pipelines/acme_hourly_positions.yml")

    assert result.exit_code == 0, result.output
    hours, totals = expected_positions(SandboxConfig())
    rows = project.rows("hourly_positions")
    found = {(r["commodity"], r["product_code"], r["currency"], r["interval_start"]): r for r in rows}
    assert len(found) == len(rows) == len(hours)
    assert sorted(found) == sorted(hours)
    assert {r["currency"] for r in rows} == {"EUR", "GBP"}  # the pence became pounds
    for key, want in hours.items():
        row = found[key]
        assert row["trades"] == want["trades"], key
        assert row["net_mwh"] == pytest.approx(want["net_mwh"], abs=1e-6), key
        # Each trade's value is split in whole cents, so an hour is off by at most a cent a trade.
        assert abs(float(row["value"]) - want["value"]) <= 0.01 * want["trades"] + 1e-6, key
        local = datetime.fromisoformat(row["interval_start"]).astimezone(BERLIN).isoformat()
        assert row["hour_start_local"] == local, key
    summed: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for row in rows:
        assert Decimal(row["value"]) == Decimal(row["value"]).quantize(CENT), row  # exact text (DECIMAL_TEXT)
        summed[(row["commodity"], row["product_code"], row["currency"])] += Decimal(row["value"])
    assert dict(summed) == dict(totals)  # not a cent lost or made in the split
    steps = project.pipeline_result()["steps"]
    assert steps["transforms[0].dedupe"]["rows_in"] == len(expected_trades().valid)
    assert steps["transforms[7].aggregate"]["groups"] == len(hours)


# --- acme_settlement_instructions --------------------------------------------------------------

def expected_request_keys(config: SandboxConfig, *, page_size: int = 100, batch_size: int = 50) -> list[str]:
    """The Idempotency-Key of every POST, from the valid settlements page by page, as
    docs/pipelines.md defines it (SHA-256 of a prefix, the connector, the path and the body)."""
    columns = ["settlement_id", "trade_id", "counterparty_lei", "settlement_date", "amount", "currency", "status"]
    keys = []
    for first in range(0, config.settlements, page_size):
        page = [settlement(i, config.seed) for i in range(first, min(first + page_size, config.settlements))
                if is_invalid_settlement(i, config.seed) is None]
        for start in range(0, len(page), batch_size):
            rows = [{c: _json_value(c, r[c]) for c in sorted(columns)} for r in page[start:start + batch_size]]
            text = json.dumps({"instructions": rows}, separators=(",", ":"))
            body = text.replace('"\\u0000', "").replace('\\u0000"', "").encode()
            prefix = b"etrmflow-http-sink/1\nacme_etrm\n/api/v2/settlement-instructions\n"
            keys.append(hashlib.sha256(prefix + body).hexdigest())
    return keys


def _json_value(column: str, value: Any) -> Any:
    """The amount is declared money at scale 2: it goes out as a JSON number with both decimals
    (40.50, 25.00; marked here, unquoted after encoding); a whole number otherwise goes out as
    an integer (25, never 25.0), as the http sink sends it."""
    if column == "amount":
        return f"\x00{cents(value)}\x00"
    return int(value) if isinstance(value, float) and value.is_integer() else value


def cents(value: float) -> str:
    return str(Decimal(repr(value)).quantize(Decimal("0.01")))


def posted_requests(project: EtrmflowProject, run_id: str) -> list[dict[str, Any]]:
    return [request for entry in audit(project)
            if entry["event"] == "batch_posted" and entry["run_id"] == run_id for request in entry["requests"]]


def test_settlement_instructions_are_stored_and_posted_with_the_same_keys_on_a_rerun(
        project: EtrmflowProject) -> None:
    config = SandboxConfig()
    expected = expected_settlements(config)
    keys = expected_request_keys(config)
    runs = []
    for _ in range(2):
        result = project.run("run", "pipelines/acme_settlement_instructions.yml")
        assert result.exit_code == 0, result.output
        runs.append(project.run_results()["run_id"])
        pipeline = project.pipeline_result()
        assert pipeline["sinks"][INSTRUCTIONS] == len(expected.valid)
        assert pipeline["counts"]["written"] == len(expected.valid)

    project.assert_loaded_exactly(expected, table="settlements", pipeline="acme_settlement_instructions",
                                  id_field="settlement_id")
    sent = {i: settlement(i, config.seed) for i in range(config.settlements)}
    stored = {row["settlement_id"]: row["amount"] for row in project.rows("settlements")}
    # declared money: stored as the exact decimal text, both decimals kept
    assert stored == {r["settlement_id"]: cents(r["amount"]) for r in sent.values()
                      if r["settlement_id"] in expected.valid}
    first, second = (posted_requests(project, run_id) for run_id in runs)
    assert [r["idempotency_key"] for r in first] == [r["idempotency_key"] for r in second] == keys
    assert sum(r["rows"] for r in first) == len(expected.valid)
    assert len(first) == sum(math.ceil(n / 50) for n in (96, 19))  # two vendor pages, 50 rows a request
    # The embedded sandbox is new each run, so each run's vendor books them for the first time.
    assert {(r["status"], r["replayed"]) for r in first + second} == {(201, False)}


def test_against_a_vendor_that_keeps_its_keys_a_rerun_books_nothing_twice(
        project: EtrmflowProject, sandbox_vendor: ThreadedSandbox) -> None:
    project.env["ACME_BASE_URL"] = sandbox_vendor.base_url
    expected = expected_settlements(sandbox_vendor.config)

    results = [project.run("run", "pipelines/acme_settlement_instructions.yml") for _ in range(2)]

    assert [r.exit_code for r in results] == [0, 0], results[-1].output
    booked = bookings(sandbox_vendor)
    assert sorted(booked) == sorted(expected.valid)
    assert {sid: len(times) for sid, times in booked.items() if len(times) != 1} == {}
    for sid, (booking,) in booked.items():
        record = settlement(int(sid.rsplit("-", 1)[1]) - 1, sandbox_vendor.config.seed)
        assert booking["instruction"]["amount"] == Decimal(repr(record["amount"])), sid  # every digit
    stats = sandbox_vendor.stats()
    assert stats["instructions_accepted"] == stats["instructions_replayed"] == len(expected.valid)
