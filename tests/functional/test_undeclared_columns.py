"""Columns the contract does not declare (schema drift that is loaded, columns a step derives) keep
their values in every sink: a drift field that only later pages have is in every Parquet part file,
so the dataset reads whole whichever part sorts first; a column a step derives from money holds
exact decimals (DECIMAL_TEXT in SQLite, numeric in PostgreSQL, decimal128 in Parquet, the digits in
CSV), from the first page on, even when the first pages have no value in it.

The vendor is a plain HTTP server on loopback serving the pages a test sets; the real CLI runs in
a temp project (the last tests drive a sink directly, with pages no vendor sends). Expected values
are worked out here from the pages, not by the sinks; every output is read back by its own reader.
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from etrmflow.components import BatchInfo, ContractInfo, SinkContext
from etrmflow.errors import SinkError
from etrmflow.sinks import ParquetSink, SqliteSink
from etrmflow.sinks.parquet_schema import common_type
from etrmflow.testing import (
    EtrmflowProject,
    PostgresDatabase,
    ScriptedRequest,
    ScriptedVendor,
)

from . import REPO, kill_mid_run
from .test_postgres_runs import DSN, database_env

CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, trade_day]
  properties:
    deal_id: {type: string}
    trade_day: {type: string}
    price: {type: [number, "null"], x-etrmflow-decimal: {scale: 2, precision: 18}}
"""
CONNECTOR = """\
name: vendor
base_url: "{{ env_var('VENDOR_URL') }}"
auth: {type: none}
streams:
  trades:
    path: /deals
    records: $.deals
    paginator: {type: page_number, param: page, total_pages: $.total_pages}
"""


def pipeline(sinks: str, transforms: str = "") -> str:
    return ("name: trades\nsource: {connector: vendor, stream: trades}\ncontract: deal\n"
            + (f"transforms:\n{transforms}" if transforms else "") + f"sinks:\n{sinks}")


class Vendor:
    """Serves ``pages`` (lists of records) at ``/deals?page=N``, N from 1; ``hang_at``: a page
    number the vendor never answers (a run waits there until it is killed)."""

    def __init__(self) -> None:
        self.pages: list[list[dict[str, Any]]] = []
        self.hang_at: int | None = None
        self.release = threading.Event()
        self.server = ScriptedVendor(self.answer)
        self.url = self.server.url

    def answer(self, request: ScriptedRequest) -> dict[str, Any]:
        number = int(request.query.get("page", "1"))
        if number == self.hang_at:
            self.release.wait(60)
        records = self.pages[number - 1] if 0 < number <= len(self.pages) else []
        return {"deals": records, "total_pages": len(self.pages)}

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    server = Vendor()
    yield server
    server.close()


def project_at(root: Path, vendor: Vendor, pipeline_text: str) -> EtrmflowProject:
    project = EtrmflowProject(root)
    project.write({"contracts/deal.yml": CONTRACT, "connectors/vendor.yml": CONNECTOR,
                   "pipelines/trades.yml": pipeline_text})
    project.env["VENDOR_URL"] = vendor.url
    return project


def deals(first: int, count: int, day: str = "2025-03-30", **fields: Any) -> list[dict[str, Any]]:
    """``count`` deals numbered from ``first``; each field value may be a function of the number."""
    return [{"deal_id": f"D{n:03d}", "trade_day": day, "price": round(40 + n / 4, 2),
             **{k: v(n) if callable(v) else v for k, v in fields.items()}} for n in range(first, first + count)]


def read_both(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The dataset as pandas.read_parquet and pyarrow.dataset read the folder, sorted by deal."""
    frame = pd.read_parquet(folder)
    by_pandas = [{k: None if pd.isna(v) else v for k, v in row.items()} for row in frame.to_dict("records")]
    by_arrow = ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pylist()
    return (sorted(by_pandas, key=lambda r: r["deal_id"]), sorted(by_arrow, key=lambda r: r["deal_id"]))


def part_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet"))


# --- Parquet: drift fields that only later pages have ----------------------------------------------

LATE_DRIFT = [deals(4 * p, 4) for p in range(6)] + [
    deals(24, 4, venue=lambda n: f"venue-{n}"),
    deals(28, 4, venue=lambda n: f"venue-{n}", broker_fee=lambda n: n + 0.25),
]


def _expected_drift(records: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    return {r["deal_id"]: (r.get("venue"), r.get("broker_fee")) for r in records}


def test_a_drift_field_of_later_pages_reads_back_from_the_whole_dataset(tmp_path: Path, vendor: Vendor) -> None:
    vendor.pages = LATE_DRIFT
    project = project_at(tmp_path, vendor, pipeline("  - {type: parquet, path: target/deals}\n"))

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    expected = _expected_drift([r for page in LATE_DRIFT for r in page])
    folder = project.path("target/deals")
    for rows in read_both(folder):
        assert {r["deal_id"]: (r["venue"], r["broker_fee"]) for r in rows} == expected
    for part in part_files(folder):  # whichever part a reader takes its schema from
        schema = pq.read_schema(part)
        assert (schema.field("venue").type, schema.field("broker_fee").type) == (pa.string(), pa.float64()), part


def test_append_and_replace_partition_give_kept_parts_the_new_columns(tmp_path: Path, vendor: Vendor) -> None:
    sinks = ("  - {type: parquet, path: target/appended, mode: append}\n"
             "  - {type: parquet, path: target/by_day, mode: replace_partition, partition_by: [trade_day]}\n")
    project = project_at(tmp_path, vendor, pipeline(sinks))
    vendor.pages = [deals(4 * p, 4, day=f"2025-03-{28 + p % 2}") for p in range(4)]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    first = [r for page in vendor.pages for r in page]
    # The second run reloads one day, with fields the first run's parts do not have.
    vendor.pages = [deals(100, 4, day="2025-03-29", venue="EEX", broker_fee=lambda n: n * 0.5)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    second = vendor.pages[0]
    appended = _expected_drift([*first, *second])
    by_day = _expected_drift([*(r for r in first if r["trade_day"] != "2025-03-29"), *second])
    for folder, expected in (("target/appended", appended), ("target/by_day", by_day)):
        for rows in read_both(project.path(folder)):
            assert {r["deal_id"]: (r["venue"], r["broker_fee"]) for r in rows} == expected, folder
        for part in part_files(project.path(folder)):
            assert {"venue", "broker_fee"} <= set(pq.read_schema(part).names), part
    assert not list(project.path("target").rglob(".rewriting-*"))


def test_integers_and_floats_of_one_drift_field_read_back_as_exact_doubles(tmp_path: Path, vendor: Vendor) -> None:
    vendor.pages = [deals(0, 3, broker_fee=lambda n: n + 1), deals(3, 3), deals(6, 3, broker_fee=lambda n: n + 0.125)]
    project = project_at(tmp_path, vendor, pipeline("  - {type: parquet, path: target/deals}\n"))

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    expected = {r["deal_id"]: r.get("broker_fee") for page in vendor.pages for r in page}
    for rows in read_both(project.path("target/deals")):
        assert {r["deal_id"]: r["broker_fee"] for r in rows} == expected
    assert {pq.read_schema(part).field("broker_fee").type for part in part_files(project.path("target/deals"))} == {
        pa.float64()}


@pytest.mark.parametrize("pages,message", [
    ([deals(0, 2, ref=lambda n: f"R-{n}"), deals(2, 2, ref=lambda n: n)],
     (r"column ref is (string|int64) in part part-\w+\.parquet but (int64|string) in part part-\w+\.parquet: "
      r"no type holds both without changing values, so the folder would not read as one dataset; declare the "
      r"field in contract 'deal' \(a type every page is checked against\) or convert it with a cast step; "
      r"nothing was published, .*target/deals is as it was")),
    ([deals(0, 2, ref=lambda n: 2 ** 53 + 1 + n), deals(2, 2, ref=lambda n: n + 0.5)],
     (r"column ref of part part-\w+\.parquet is int64, and the other parts need double, which cannot hold "
      r"its values unchanged \(Integer value 9007199254740993 not in range.*\); declare the field")),
], ids=["text-and-numbers", "integers-a-double-would-round"])
def test_a_drift_field_no_type_holds_fails_the_run_and_publishes_nothing(tmp_path: Path, vendor: Vendor,
                                                                         pages: list[Any], message: str) -> None:
    project = project_at(tmp_path, vendor, pipeline("  - {type: parquet, path: target/deals}\n"))
    vendor.pages = [deals(50, 2)]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    vendor.pages = pages

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1
    assert re.search(message, result.output), result.output
    rows = pq.read_table(project.path("target/deals")).to_pylist()
    assert sorted(r["deal_id"] for r in rows) == ["D050", "D051"]  # the previous output, untouched


def test_a_run_killed_before_the_drift_pages_resumes_into_one_schema(tmp_path: Path, vendor: Vendor) -> None:
    vendor.pages = LATE_DRIFT
    vendor.hang_at = 5
    sinks = "  - {type: parquet, path: target/deals}\n"
    killed, clean = project_at(tmp_path / "killed", vendor, pipeline(sinks)), project_at(tmp_path / "clean", vendor,
                                                                                          pipeline(sinks))
    kill_mid_run(killed.root, {**os.environ, "VENDOR_URL": vendor.url, "PYTHONPATH": str(REPO)}, pages=4)
    assert not killed.path("target/deals").exists()  # nothing published half-way
    vendor.hang_at = None
    vendor.release.set()

    resumed = killed.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    expected = _expected_drift([r for page in LATE_DRIFT for r in page])
    for project in (killed, clean):
        for rows in read_both(project.path("target/deals")):
            assert {r["deal_id"]: (r["venue"], r["broker_fee"]) for r in rows} == expected
    schemas = {pq.read_schema(part) for part in part_files(killed.path("target/deals"))}
    assert len({tuple(sorted((f.name, str(f.type)) for f in schema)) for schema in schemas}) == 1


# --- money a step derives: exact in every sink, from the first page on ------------------------------

DERIVE = """\
  - type: derive
    columns:
      fee: price
      commission: price * decimal(rate)
"""
# Page 1 has no price, so no fee: its columns are empty. Pages 2 and 3 give commissions of 6 and 3 decimals.
MONEY_PAGES = [deals(0, 3, price=None, rate=0.0015), deals(3, 3, rate=0.0015), deals(6, 3, rate=0.5)]


def _expected_money() -> dict[str, tuple[Decimal | None, Decimal | None]]:
    """deal -> (fee, commission): the price at its declared scale, times the rate as written."""
    found = {}
    for record in (r for page in MONEY_PAGES for r in page):
        price = None if record["price"] is None else Decimal(repr(record["price"])).quantize(Decimal("0.01"))
        found[record["deal_id"]] = (price, None if price is None else price * Decimal(repr(record["rate"])))
    return found


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def test_derived_money_is_exact_in_sqlite_and_parquet(tmp_path: Path, vendor: Vendor) -> None:
    vendor.pages = MONEY_PAGES
    sinks = ("  - {type: sqlite, path: target/etrmflow.db, table: deals}\n"
             "  - {type: parquet, path: target/deals}\n")
    project = project_at(tmp_path, vendor, pipeline(sinks, DERIVE))
    expected = _expected_money()

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    columns = {row[1]: row[2] for row in project.query("PRAGMA table_info(deals)")}
    assert (columns["fee"], columns["commission"]) == ("DECIMAL_TEXT", "DECIMAL_TEXT")
    stored = project.query("SELECT deal_id, fee, commission, typeof(fee), typeof(commission) FROM deals")
    assert {d: (f, c) for d, f, c, *_ in stored} == {d: (_text(f), _text(c)) for d, (f, c) in expected.items()}
    assert {(f, c) for *_, f, c in stored} == {("null", "null"), ("text", "text")}

    folder = project.path("target/deals")
    for part in part_files(folder):
        schema = pq.read_schema(part)
        assert (schema.field("fee").type, schema.field("commission").type) == (
            pa.decimal128(38, 2), pa.decimal128(38, 6)), part
    for rows in read_both(folder):
        assert {r["deal_id"]: (r["fee"], r["commission"]) for r in rows} == expected


def test_derived_money_keeps_its_digits_in_csv(tmp_path: Path, vendor: Vendor) -> None:
    vendor.pages = MONEY_PAGES
    project = project_at(tmp_path, vendor, pipeline("  - {type: csv, path: target/deals.csv}\n", DERIVE))

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    with project.path("target/deals.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["deal_id"]: (r["fee"], r["commission"]) for r in rows} == {
        d: (_text(f) or "", _text(c) or "") for d, (f, c) in _expected_money().items()}


def test_derived_money_is_numeric_in_postgres(tmp_path: Path, vendor: Vendor,
                                               postgresql_database: PostgresDatabase) -> None:
    vendor.pages = MONEY_PAGES
    sink = f'  - {{type: postgres, dsn: "{DSN}", schema: derived, table: deals}}\n'
    project = project_at(tmp_path, vendor, pipeline(sink, DERIVE))
    project.env.update(database_env(postgresql_database))

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    kinds = dict(postgresql_database.query(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'derived.deals'::regclass AND attnum > 0"))
    assert (kinds["fee"], kinds["commission"]) == ("numeric", "numeric")
    stored = postgresql_database.query("SELECT deal_id, fee, commission FROM derived.deals")
    assert {d: (_text(f), _text(c)) for d, f, c in stored} == {
        d: (_text(f), _text(c)) for d, (f, c) in _expected_money().items()}


# --- the sinks themselves: what a later page of another kind does to an exact column ---------------

DEALS = ContractInfo(name="deal", version="1", primary_key=("deal_id",),
                     schema={"type": "object", "properties": {"deal_id": {"type": "string"}}})


def _write(sink: Any, tmp_path: Path, *frames: pd.DataFrame) -> None:
    sink.open(SinkContext(pipeline="deals", run_id="run-1", contract=DEALS, project_dir=str(tmp_path),
                          target_dir=str(tmp_path / "target")))
    try:
        for index, frame in enumerate(frames):
            sink.write(frame, BatchInfo(run_id="run-1", batch_id=f"b{index}", page_sha256="", pipeline="deals"))
    except BaseException:
        sink.close(False)  # as the engine does when a write fails
        raise
    sink.close(True)


def test_a_sqlite_column_of_decimals_stays_exact_text_and_refuses_text(tmp_path: Path) -> None:
    pages = [pd.DataFrame({"deal_id": ["A", "B"], "fee": [Decimal("1.50"), Decimal("-0.000001")]}),
             pd.DataFrame({"deal_id": ["C", "D"], "fee": [0.1, 7]}),  # a page of floats: their shortest text
             pd.DataFrame({"deal_id": ["E"], "fee": [Decimal("1E+3")]})]
    _write(SqliteSink({"table": "deals"}), tmp_path, *pages)
    with pytest.raises(SinkError, match=r"'12\.5' cannot go into column fee, which holds exact decimals"):
        _write(SqliteSink({"table": "deals"}), tmp_path, pd.DataFrame({"deal_id": ["F"], "fee": ["12.5"]}))

    with sqlite3.connect(tmp_path / "target/etrmflow.db") as db:
        stored = db.execute("SELECT deal_id, fee, typeof(fee) FROM deals ORDER BY deal_id").fetchall()
        declared = {row[1]: row[2] for row in db.execute("PRAGMA table_info(deals)")}
    assert declared["fee"] == "DECIMAL_TEXT"
    assert stored == [("A", "1.50", "text"), ("B", "-0.000001", "text"), ("C", "0.1", "text"), ("D", "7.0", "text"),
                      ("E", "1000", "text")]


def test_parquet_refuses_decimals_beyond_decimal128_instead_of_rounding(tmp_path: Path) -> None:
    wide = Decimal("1234567890123456789012345678901.123456789")  # 31 digits before the point, 9 after
    with pytest.raises(SinkError, match=r"column fee holds decimals that need 31 digits before the point and 9 "
                                        r"after it, more than Parquet's decimal128 holds \(38\)"):
        _write(ParquetSink({"path": "out/deals"}), tmp_path, pd.DataFrame({"deal_id": ["A"], "fee": [wide]}))
    assert not (tmp_path / "out/deals").exists()


@pytest.mark.parametrize("a,b,common", [
    (pa.null(), pa.decimal128(38, 2), pa.decimal128(38, 2)),
    (pa.decimal128(38, 2), pa.decimal128(38, 6), pa.decimal128(38, 6)),
    (pa.decimal128(18, 2), pa.decimal128(10, 5), pa.decimal128(21, 5)),
    (pa.int64(), pa.decimal128(38, 2), pa.decimal128(38, 2)),
    (pa.int32(), pa.int64(), pa.int64()),
    (pa.int64(), pa.float64(), pa.float64()),
    (pa.timestamp("us", "UTC"), pa.timestamp("ns", "UTC"), pa.timestamp("ns", "UTC")),
    (pa.string(), pa.int64(), None),
    (pa.float64(), pa.decimal128(38, 2), None),  # a float's digits are not a decimal's
    (pa.bool_(), pa.int64(), None),
    (pa.uint64(), pa.int64(), None),
    (pa.timestamp("us", "UTC"), pa.timestamp("us", "Europe/Berlin"), None),
])
def test_the_common_type_of_two_parts_changes_no_value(a: pa.DataType, b: pa.DataType,
                                                        common: pa.DataType | None) -> None:
    assert common_type(a, b) == common and common_type(b, a) == common
