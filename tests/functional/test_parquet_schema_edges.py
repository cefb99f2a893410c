"""Edges of the sinks' handling of columns the contract does not declare: Parquet part schemas
unified at publish (conflicts, published parts of earlier runs, a kill -9 while they are
rewritten), partition columns that are drift fields, columns empty in every part, and money a
step computes that a later run gives as floats (SQLite, the real PostgreSQL, CSV).

The vendor serves pages over loopback (``test_undeclared_columns.Vendor``) and the real CLI runs
in a temp project; a few tests drive a sink directly with batches no vendor sends. Expected values
are worked out here from the pages; every output is read back by its own reader.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from etrmflow.errors import SinkError
from etrmflow.sinks import ParquetSink
from etrmflow.testing import PostgresDatabase

from . import REPO
from .test_postgres_runs import DSN, database_env
from .test_undeclared_columns import Vendor, _write, deals, pipeline, project_at


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    server = Vendor()
    yield server
    server.close()


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_rows(folder: Path, *columns: str) -> list[tuple[Any, ...]]:
    """``deal_id`` and ``columns`` of every row, read by pyarrow.dataset, then checked against
    what pandas.read_parquet reads; sorted by deal."""
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    by_arrow = sorted(tuple(row[c] for c in ("deal_id", *columns)) for row in table.to_pylist())
    frame = pd.read_parquet(folder)
    by_pandas = sorted(tuple(None if v is None or (isinstance(v, float) and pd.isna(v)) else v
                             for v in row) for row in frame[["deal_id", *columns]].itertuples(index=False))
    assert by_pandas == by_arrow
    return by_arrow


def parquet_parts(folder: Path) -> list[Path]:
    return sorted(folder.rglob("part-*.parquet"))


# --- a conflict found while rewriting parts leaves the published folder as it was -----------------

BIG = 2 ** 53 + 1
"""An integer a double cannot hold: next to floats, its column has no common type."""
WIDE = "123456789012345678901234567890.12"
"""30 digits before the point: decimal128(38, 2) holds it, decimal128(38, 10) does not."""
FROM_TEXT = "  - type: derive\n    columns:\n      fee: decimal(fee_text)\n"

CONFLICTS = {
    # An append run whose floats meet integers the earlier run published, one of them beyond 2**53.
    "ints-beyond-2**53-meet-floats": (
        "  - {type: parquet, path: target/deals, mode: append}\n", "",
        [deals(0, 2, ref=lambda n: BIG + n), *(deals(2 + 4 * p, 4, ref=lambda n: n) for p in range(5))],
        [deals(100, 2, ref=lambda n: n + 0.5, venue="EEX")], "ref", "D000"),
    # A replace_partition run whose fees have 10 decimals meets kept partitions at scale 1 and 2,
    # the last with 30 integer digits: decimal128(38, 10) cannot hold those.
    "30-integer-digits-at-scale-2-meet-scale-10": (
        "  - {type: parquet, path: target/deals, mode: replace_partition, partition_by: [trade_day]}\n",
        FROM_TEXT,
        [*(deals(4 * p, 4, day=f"2025-03-0{p + 1}", fee_text="12.5") for p in range(4)),
         deals(16, 2, day="2025-03-05", fee_text=WIDE)],
        [deals(100, 2, day="2025-03-09", fee_text="0.0000000001")], "fee", "D016"),
}


@pytest.mark.parametrize("case", sorted(CONFLICTS))
def test_a_conflict_found_while_rewriting_leaves_every_published_part_as_it_was(
        tmp_path: Path, vendor: Vendor, case: str) -> None:
    sink, steps, first, second, column, culprit = CONFLICTS[case]
    project = project_at(tmp_path, vendor, pipeline(sink, steps))
    vendor.pages = first
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    folder = project.path("target/deals")
    published, rows = digests(folder), read_rows(folder, column)
    failing = next(p for p in parquet_parts(folder) if culprit in pq.read_table(p)["deal_id"].to_pylist())
    assert parquet_parts(folder).index(failing) > 0  # parts rewritten fine come before the one that fails
    vendor.pages = second

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1
    assert re.search(rf"column {column} of part {re.escape(failing.name)} \(published in \S+ by an earlier run\) "
                     r"is .+?, and the other parts need .*which cannot hold its values unchanged .*nothing was "
                     r"published", result.output), result.output
    assert digests(folder) == published  # not one part rewritten, no temporary file left
    assert read_rows(folder, column) == rows  # and the folder reads as it did


# --- a kill -9 while published parts are rewritten, then --resume ---------------------------------

KILL_ON_RENAME = """\
import os
import signal

_replace = os.replace
_renames = 0


def _replace_or_die(source, *args, **kwargs):
    # Kills the run on the KILL_AT_RENAME-th rename of a rewritten part into place.
    global _renames
    if os.path.basename(os.fspath(source)).startswith(".rewriting-"):
        _renames += 1
        if _renames == int(os.environ.get("KILL_AT_RENAME", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
    return _replace(source, *args, **kwargs)


os.replace = _replace_or_die
"""
KEPT = [deals(4 * p, 4, ref=lambda n: n * 10) for p in range(6)]
"""Six pages: six parts with ``ref`` as int64 that the second (append) run keeps."""
LATER = [deals(100, 3, ref=lambda n: n + 0.25, venue="EEX")]
"""Floats and a new column: every kept part is rewritten (ref as double, venue added)."""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 4], ids=["before-the-first-rename", "after-three-renames"])
def test_a_run_killed_while_rewriting_published_parts_resumes_to_what_a_clean_run_writes(
        tmp_path: Path, vendor: Vendor, kill_at: int) -> None:
    sink = "  - {type: parquet, path: target/deals, mode: append}\n"
    killed, clean = (project_at(tmp_path / name, vendor, pipeline(sink)) for name in ("killed", "clean"))
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_ON_RENAME)
    vendor.pages = KEPT
    assert killed.run("run", "pipelines/trades.yml").exit_code == 0
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    vendor.pages = LATER
    env = {**os.environ, **killed.env, "PYTHONPATH": f"{hooks}{os.pathsep}{REPO}", "KILL_AT_RENAME": str(kill_at)}

    crashed = subprocess.run([sys.executable, "-m", "etrmflow", "run", "pipelines/trades.yml"], cwd=killed.root,
                             env=env, capture_output=True, text=True, check=False)

    assert crashed.returncode == -9, crashed.stderr
    folder = killed.path("target/deals")
    old = {(f"D{n:03d}", n * 10) for n in range(24)}
    # Readable meanwhile, with the earlier run's rows alone (parts rewritten or not)
    assert {(d, r) for d, r in read_rows(folder, "ref")} == old
    resumed = killed.run("run", "--resume", "pipelines/trades.yml")
    assert resumed.exit_code == 0, resumed.output
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    expected = sorted([*((d, float(r), None) for d, r in old), *((f"D{n}", n + 0.25, "EEX") for n in range(100, 103))])
    for project in (killed, clean):
        assert read_rows(project.path("target/deals"), "ref", "venue") == expected
        assert len({str(pq.read_schema(p)) for p in parquet_parts(project.path("target/deals"))}) == 1
    assert not list(tmp_path.rglob(".rewriting-*"))


# --- messages that name what is where ----------------------------------------------------------------

def test_a_type_conflict_names_a_part_that_holds_each_of_the_two_types(tmp_path: Path) -> None:
    # b0 has no fee (null), b1 floats, b2 Decimals: the double is in b1, not in b0.
    pages = [pd.DataFrame({"deal_id": ["A"], "fee": [None]}), pd.DataFrame({"deal_id": ["B"], "fee": [0.5]}),
             pd.DataFrame({"deal_id": ["C"], "fee": [Decimal("1.25")]})]

    with pytest.raises(SinkError) as failed:
        _write(ParquetSink({"path": "out/deals"}), tmp_path, *pages)

    assert re.search(r"column fee is double in part part-b1\.parquet but decimal128\(38, 2\) in part "
                     r"part-b2\.parquet", str(failed.value)), failed.value
    assert not (tmp_path / "out/deals").exists()


FLOAT_FEE = "  - type: derive\n    columns:\n      fee: notional * 0.0015\n"
DECIMAL_FEE = "  - type: derive\n    columns:\n      fee: notional * decimal('0.0015')\n"


def test_a_conflict_with_parts_an_earlier_run_published_names_them_and_how_to_resolve_it(
        tmp_path: Path, vendor: Vendor) -> None:
    sink = "  - {type: parquet, path: target/deals, mode: append}\n"
    project = project_at(tmp_path, vendor, pipeline(sink, FLOAT_FEE))  # as etrmflow stored it before: doubles
    vendor.pages = [deals(0, 2, notional=1000), deals(2, 2, notional=2000)]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    folder = project.path("target/deals")
    published = digests(folder)
    project.write({"pipelines/trades.yml": pipeline(sink, DECIMAL_FEE)})
    vendor.pages = [deals(10, 2, notional=1000)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1
    assert re.search(r"column fee is decimal128\(38, 4\) in part part-\w+\.parquet but double in part "
                     r"part-\w+\.parquet \(published in \S+target/deals by an earlier run\): no type holds both.*"
                     r"the published parts hold it as double: give the column that type in a step, or write the "
                     r"whole folder again with mode: replace; or declare the field", result.output), result.output
    assert digests(folder) == published


# --- what holds: empty columns, kept partitions of an older schema, partition columns ---------------

def test_a_column_empty_in_every_part_reads_back_empty(tmp_path: Path, vendor: Vendor) -> None:
    vendor.pages = [deals(0, 2, note=None), deals(2, 2, note=None), deals(4, 2)]
    project = project_at(tmp_path, vendor, pipeline("  - {type: parquet, path: target/deals}\n"))

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    folder = project.path("target/deals")
    assert read_rows(folder, "note") == [(f"D00{n}", None) for n in range(6)]
    assert {pq.read_schema(p).field("note").type for p in parquet_parts(folder)} == {pa.null()}


def test_replace_partition_widens_the_kept_partitions_of_an_older_schema(tmp_path: Path, vendor: Vendor) -> None:
    sink = "  - {type: parquet, path: target/deals, mode: replace_partition, partition_by: [trade_day]}\n"
    project = project_at(tmp_path, vendor, pipeline(sink, FROM_TEXT))
    vendor.pages = [deals(0, 2, day="2025-03-01", ref=lambda n: n, fee_text="1.5"),
                    deals(2, 2, day="2025-03-02", ref=lambda n: n, fee_text="2.25")]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    # Day 2 again, with floats, a fee of 4 decimals and a column the first run had not.
    vendor.pages = [deals(4, 2, day="2025-03-02", ref=0.5, fee_text="0.0001", venue="EEX")]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    folder = project.path("target/deals")
    assert read_rows(folder, "trade_day", "ref", "fee", "venue") == [
        ("D000", "2025-03-01", 0.0, Decimal("1.5000"), None), ("D001", "2025-03-01", 1.0, Decimal("1.5000"), None),
        ("D004", "2025-03-02", 0.5, Decimal("0.0001"), "EEX"), ("D005", "2025-03-02", 0.5, Decimal("0.0001"), "EEX")]
    assert {(pq.read_schema(p).field("ref").type, pq.read_schema(p).field("fee").type) for p in parquet_parts(folder)} \
        == {(pa.float64(), pa.decimal128(38, 4))}


def test_replace_partition_gives_a_kept_partitions_empty_column_the_type_of_the_new_values(tmp_path: Path, vendor: Vendor) -> None:
    sink = "  - {type: parquet, path: target/deals, mode: replace_partition, partition_by: [trade_day]}\n"
    project = project_at(tmp_path, vendor, pipeline(sink))
    vendor.pages = [deals(0, 2, day="2025-03-01"), deals(2, 2, day="2025-03-02", ref="R-7")]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    # Day 1 got an empty text column when the first run published; day 2 comes again, with integers
    # where its old part had text. Nothing holds text any more: day 1's empty column becomes int64.
    vendor.pages = [deals(4, 2, day="2025-03-02", ref=lambda n: n)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    folder = project.path("target/deals")
    assert read_rows(folder, "trade_day", "ref") == [
        ("D000", "2025-03-01", None), ("D001", "2025-03-01", None), ("D004", "2025-03-02", 4), ("D005", "2025-03-02", 5)]
    assert {pq.read_schema(p).field("ref").type for p in parquet_parts(folder)} == {pa.int64()}


def test_a_partition_column_a_page_lacks_fails_naming_it(tmp_path: Path, vendor: Vendor) -> None:
    sink = "  - {type: parquet, path: target/deals, mode: replace_partition, partition_by: [venue]}\n"
    project = project_at(tmp_path, vendor, pipeline(sink))
    vendor.pages = [deals(0, 2, venue="EEX"), deals(2, 2)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1
    assert re.search(r"partition column venue is neither in contract 'deal' nor in the batch", result.output), \
        result.output
    assert not project.path("target/deals").exists()


# --- money a step computes, then a later run gives as floats: SQLite, PostgreSQL, CSV ---------------

# Page 1 has no notional (no fee: the column waits for a value); deal D001 comes again on pages 2
# and 3, D003 twice on page 2 (the second counts), D002 again on page 4, whose notionals are all
# empty (the column exists by then).
MONEY = [deals(0, 2, notional=None),
         [*deals(2, 2, notional=1001.5), *deals(1, 1, notional=1000.25), *deals(3, 1, notional=5.5)],
         deals(1, 1, notional=1234.5), deals(2, 1, notional=None)]


def _fees(as_float: bool) -> dict[str, str | None]:
    """deal -> fee as the sinks store it: the deal's latest notional times 0.0015, as Decimals
    or as floats (a float by the digits of its shortest repr)."""
    latest: dict[str, Any] = {}
    for page in MONEY:
        for record in page:
            latest[record["deal_id"]] = record["notional"]
    exact = {d: None if n is None else
             Decimal(repr(n * 0.0015)) if as_float else Decimal(repr(n)) * Decimal("0.0015")
             for d, n in latest.items()}
    return {d: None if fee is None else format(fee, "f") for d, fee in exact.items()}


def test_sqlite_money_column_keeps_the_latest_of_each_deal_and_takes_a_later_runs_floats_as_their_digits(
        tmp_path: Path, vendor: Vendor) -> None:
    sink = "  - {type: sqlite, path: target/etrmflow.db, table: deals}\n"
    project = project_at(tmp_path, vendor, pipeline(sink, DECIMAL_FEE))
    vendor.pages = MONEY

    first = project.run("run", "pipelines/trades.yml")

    assert first.exit_code == 0, first.output
    assert {r[1]: r[2] for r in project.query("PRAGMA table_info(deals)")}["fee"] == "DECIMAL_TEXT"
    assert dict(project.query("SELECT deal_id, fee FROM deals")) == _fees(as_float=False)
    project.write({"pipelines/trades.yml": pipeline(sink, FLOAT_FEE)})
    second = project.run("run", "pipelines/trades.yml")
    assert second.exit_code == 0, second.output
    assert dict(project.query("SELECT deal_id, fee FROM deals")) == _fees(as_float=True)
    assert {t for (t,) in project.query("SELECT DISTINCT typeof(fee) FROM deals")} == {"text", "null"}


def test_sqlite_keeps_every_digit_of_a_float_in_a_column_made_for_declared_decimals(
        tmp_path: Path, vendor: Vendor) -> None:
    # The contract declared price an exact decimal (DECIMAL_TEXT(18,2)), then a plain number: SQLite
    # stored a float in that text column with 15 significant digits (1234567.89123457).
    project = project_at(tmp_path, vendor, pipeline("  - {type: sqlite, path: target/etrmflow.db, table: deals}\n"))
    vendor.pages = [deals(0, 1)]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    contract = project.path("contracts/deal.yml")
    contract.write_text(contract.read_text().replace(", x-etrmflow-decimal: {scale: 2, precision: 18}", ""))
    vendor.pages = [deals(1, 1, price=1234567.891234567)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert project.query("SELECT deal_id, price FROM deals ORDER BY deal_id") == [
        ("D000", "40.00"), ("D001", "1234567.891234567")]


def test_postgres_money_column_keeps_the_latest_of_each_deal_and_takes_a_later_runs_floats(
        tmp_path: Path, vendor: Vendor, postgresql_database: PostgresDatabase) -> None:
    sink = f'  - {{type: postgres, dsn: "{DSN}", schema: money, table: deals}}\n'
    project = project_at(tmp_path, vendor, pipeline(sink, DECIMAL_FEE))
    project.env.update(database_env(postgresql_database))
    vendor.pages = MONEY

    def stored() -> dict[str, str | None]:
        return {d: None if f is None else format(f, "f")
                for d, f in postgresql_database.query("SELECT deal_id, fee FROM money.deals")}

    first = project.run("run", "pipelines/trades.yml")

    assert first.exit_code == 0, first.output
    kind = postgresql_database.query("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                     "WHERE attrelid = 'money.deals'::regclass AND attname = 'fee'")
    assert kind == [("numeric",)]
    assert stored() == _fees(as_float=False)
    project.write({"pipelines/trades.yml": pipeline(sink, FLOAT_FEE)})
    second = project.run("run", "pipelines/trades.yml")
    assert second.exit_code == 0, second.output
    assert stored() == _fees(as_float=True)


def test_postgres_loads_a_page_without_values_in_columns_earlier_pages_typed_as_numbers(
        tmp_path: Path, vendor: Vendor, postgresql_database: PostgresDatabase) -> None:
    # Page 1 makes notional double precision and fee numeric; page 2 has neither value (it failed:
    # "column notional is double precision ..., but its values need text").
    sink = f'  - {{type: postgres, dsn: "{DSN}", schema: empties, table: deals}}\n'
    project = project_at(tmp_path, vendor, pipeline(sink, DECIMAL_FEE))
    project.env.update(database_env(postgresql_database))
    vendor.pages = [deals(0, 2, notional=1000.5), deals(2, 2, notional=None)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert postgresql_database.query("SELECT deal_id, notional, fee FROM empties.deals ORDER BY deal_id") == [
        ("D000", 1000.5, Decimal("1.50075")), ("D001", 1000.5, Decimal("1.50075")), ("D002", None, None),
        ("D003", None, None)]


def test_csv_keeps_the_digits_of_a_money_column_some_pages_lack(tmp_path: Path, vendor: Vendor) -> None:
    step = '  - {type: python, function: "money:fee_where_rated"}\n'
    project = project_at(tmp_path, vendor, pipeline("  - {type: csv, path: target/deals.csv}\n", step))
    project.write({"money.py": "from decimal import Decimal\n\n\ndef fee_where_rated(frame):\n"
                               "    if 'rate' in frame.columns:  # a page without rates gets no fee column\n"
                               "        frame['fee'] = [Decimal(r) * Decimal('1000.10') for r in frame['rate']]\n"
                               "    return frame\n"})
    rates = {"D002": "0.0015", "D003": "0.0015", "D005": "0.000000000000000001"}
    vendor.pages = [deals(0, 2), deals(2, 2, rate="0.0015"), deals(4, 1), deals(5, 1, rate=rates["D005"])]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    with project.path("target/deals.csv").open(newline="", encoding="utf-8") as handle:
        rows = {r["deal_id"]: r["fee"] for r in csv.DictReader(handle)}
    assert rows == {f"D00{n}": format(Decimal(rates[f"D00{n}"]) * Decimal("1000.10"), "f") if f"D00{n}" in rates
                    else "" for n in range(6)}
