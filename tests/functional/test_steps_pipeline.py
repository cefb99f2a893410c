"""The reshaping, money, period, reference and python steps in whole runs against the sandbox vendor.

The expected rows are worked out here from the sandbox's own records (``etrmflow.sandbox.data``)
with plain Python and zoneinfo, never with the steps under test.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any
from zoneinfo import ZoneInfo

from etrmflow.sandbox import SandboxConfig
from etrmflow.sandbox.data import is_invalid_trade, trade
from etrmflow.testing import EtrmflowProject, SandboxFactory

from . import sandbox_project

TRADES = 120
"""Enough for shaped trades (legs), a UK gas trade quoted in pence (GBX) and clock-change days."""
KEY = "{type: api_key, in: header, name: X-API-Key, value: sandbox-key}"
BERLIN = ZoneInfo("Europe/Berlin")
BOOKS = {"EL": "POWER", "NG": "GAS"}

LEGS_PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - {type: explode_legs, column: legs, prefix: leg_, index_base: 1, empty: keep}
  - {type: derive, columns: {leg_no: "coalesce(leg_index, 0)"}}
  - {type: normalise_currency, currency_column: currency, columns: [price, notional]}
  - {type: settlement_cycle, column: delivery_start, tz: Europe/Berlin, payment: {day_of_month: 20}}
  - {type: join, file: reference/books.csv, on: [commodity], columns: [book]}
  - {type: python, function: "desk_steps:add_desk", options: {desk: continental}}
sinks:
  - {type: sqlite, table: trade_legs, mode: upsert, key: [trade_id, version, leg_no]}
"""

INTERVALS_PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - type: expand_intervals
    start: delivery_start
    end: delivery_end
    resolution: PT30M
    tz: Europe/Berlin
    local_start: local_start
    divide: [volume_mwh]
  - {type: select, columns: [trade_id, version, interval_index, interval_start, local_start, volume_mwh]}
sinks:
  - {type: sqlite, table: trade_intervals, mode: upsert, key: [trade_id, version, interval_index]}
"""

DESK_STEPS = """\
def add_desk(frame, options):
    return frame.assign(desk=options["desk"])
"""


def valid_trades() -> list[dict[str, Any]]:
    seed = SandboxConfig().seed
    return [trade(i, seed) for i in range(TRADES) if not is_invalid_trade(i, seed)]


def local_day(text: str) -> dt.date:
    return dt.datetime.fromisoformat(text).astimezone(BERLIN).date()


def payment_date(day: dt.date) -> str:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    due = dt.date(year, month, 20)
    while due.weekday() >= 5:
        due += dt.timedelta(days=1)
    return due.isoformat()


def legs_project(project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> EtrmflowProject:
    vendor = sandbox_vendor_factory(trades=TRADES)
    sandbox_project(project, vendor, auth=KEY)
    project.write({"pipelines/trades.yml": LEGS_PIPELINE, "desk_steps.py": DESK_STEPS,
                   "reference/books.csv": "commodity,book\n" + "".join(f"{c},{b}\n" for c, b in BOOKS.items())})
    return project


def test_shaped_trades_become_one_row_per_leg_in_gbp_with_cycle_book_and_desk(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    project = legs_project(etrmflow_project, sandbox_vendor_factory)
    trades = valid_trades()
    assert any("legs" in t for t in trades) and any(t["currency"] == "GBX" for t in trades)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    rows = {(r["trade_id"], r["leg_no"]): r for r in project.rows("trade_legs")}
    expected_keys = {(t["trade_id"], number) for t in trades
                     for number in (range(1, len(t["legs"]) + 1) if "legs" in t else [0])}
    assert set(rows) == expected_keys
    assert project.pipeline_result()["counts"]["written"] == len(expected_keys)
    for record in trades:
        for number, leg in enumerate(record.get("legs") or [None], 1):
            row = rows[(record["trade_id"], number if leg else 0)]
            assert row["leg_leg_id"] == (leg["leg_id"] if leg else None)
            assert row["leg_volume_mwh"] == (leg["volume_mwh"] if leg else None)
            pence = record["currency"] == "GBX"
            assert row["currency"] == ("GBP" if pence else record["currency"])
            price = decimal.Decimal(str(record["price"])) / (100 if pence else 1)
            assert decimal.Decimal(str(row["price"])) == price, record["trade_id"]
            day = local_day(record["delivery_start"])
            assert (row["settlement_cycle"], row["payment_date"]) == (f"{day:%Y-%m}", payment_date(day))
            assert (row["book"], row["desk"]) == (BOOKS[record["commodity"]], "continental")


def test_a_rerun_of_the_legs_pipeline_upserts_the_same_rows(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    project = legs_project(etrmflow_project, sandbox_vendor_factory)

    runs = [project.run("run", "pipelines/trades.yml") for _ in range(2)]

    assert [r.exit_code for r in runs] == [0, 0], runs[-1].output
    loaded = project.query("SELECT trade_id, leg_no, price, currency FROM trade_legs ORDER BY trade_id, leg_no")
    assert len(loaded) == project.pipeline_result()["counts"]["written"]
    assert len({(row[0], row[1]) for row in loaded}) == len(loaded)


def test_a_missing_reference_file_fails_the_run_naming_it(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    project = legs_project(etrmflow_project, sandbox_vendor_factory)
    project.path("reference/books.csv").unlink()

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    error = project.pipeline_result()["error"]
    assert "(join) failed on batch" in error
    assert f"join: reference file {project.path('reference/books.csv')} does not exist" in error


def test_delivery_periods_become_half_hours_in_utc_with_the_volume_spread(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=KEY)
    project.write({"pipelines/trades.yml": INTERVALS_PIPELINE})
    trades = valid_trades()

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    loaded: dict[str, list[tuple[Any, ...]]] = {}
    for row in project.query("SELECT trade_id, interval_index, interval_start, local_start, volume_mwh "
                             "FROM trade_intervals ORDER BY trade_id, interval_index"):
        loaded.setdefault(row[0], []).append(row[1:])
    assert set(loaded) == {t["trade_id"] for t in trades}
    lengths = set()
    for record in trades:
        start = dt.datetime.fromisoformat(record["delivery_start"]).astimezone(dt.timezone.utc)
        end = dt.datetime.fromisoformat(record["delivery_end"]).astimezone(dt.timezone.utc)
        count = int((end - start) / dt.timedelta(minutes=30))
        lengths.add(count)
        intervals = loaded[record["trade_id"]]
        assert [i[0] for i in intervals] == list(range(count)), record["trade_id"]
        for number, (_, utc_start, local_start, _) in enumerate(intervals):
            instant = start + dt.timedelta(minutes=30 * number)
            assert dt.datetime.fromisoformat(utc_start) == instant
            assert dt.datetime.fromisoformat(local_start).utcoffset() == instant.astimezone(BERLIN).utcoffset()
        assert abs(sum(i[3] for i in intervals) - record["volume_mwh"]) < 1e-6
    assert {46, 50} <= lengths, "clock-change days (23 and 25 hours) are among the sandbox's trades"
