"""The built-in sinks against real files and a real SQLite database in tmp_path."""

from __future__ import annotations

import csv
import dataclasses
import decimal
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pluggy
import pyarrow.parquet as pq
import pytest
import yaml
from jsonschema import Draft202012Validator

from etrmflow import hookspecs
from etrmflow.builtins import sinks as sinks_plugin
from etrmflow.components import BatchInfo, ContractInfo, Kind, SinkContext
from etrmflow.errors import SinkError
from etrmflow.plugins import Registry
from etrmflow.sinks import CsvSink, ParquetSink, SqliteSink

TRADES = ContractInfo(
    name="trades", version="1.2.0", primary_key=("trade_id", "version"),
    schema={"type": "object", "properties": {
        "trade_id": {"type": "string"},
        "version": {"type": "integer"},
        "price": {"type": "number"},
        "volume_mwh": {"type": ["number", "null"]},
        "is_buy": {"type": "boolean"},
        "legs": {"type": "array"},
        "delivery_day": {"type": "string"},
    }},
)
NO_KEY = ContractInfo(name="prices", version="1", primary_key=(),
                      schema={"type": "object", "properties": {"price": {"type": "number"}}})
LINEAGE = ["_etrmflow_run_id", "_etrmflow_batch_id", "_etrmflow_page_sha256", "_etrmflow_loaded_at"]
LOADED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def trade(trade_id: str, version: int = 1, price: float = 40.45, **extra: Any) -> dict[str, Any]:
    return {"trade_id": trade_id, "version": version, "price": price, "volume_mwh": 15.0,
            "is_buy": True, "legs": [{"price": price, "hour": 1}], "delivery_day": "2025-03-30",
            **extra}


def frame(*records: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(records))


def context(tmp_path: Path, run_id: str = "run-1", contract: ContractInfo = TRADES) -> SinkContext:
    return SinkContext(pipeline="trades", run_id=run_id, contract=contract,
                       project_dir=str(tmp_path), target_dir=str(tmp_path / "target"))


def batch(batch_id: str, run_id: str = "run-1") -> BatchInfo:
    return BatchInfo(run_id=run_id, batch_id=batch_id, page_sha256=f"sha-{batch_id}", pipeline="trades")


def run(sink: Any, tmp_path: Path, *frames: pd.DataFrame, run_id: str = "run-1", ok: bool = True,
        contract: ContractInfo = TRADES) -> list[int]:
    """Open, write each frame as batch b0, b1, ..., close: what the engine does."""
    sink.open(context(tmp_path, run_id, contract))
    counts = [sink.write(f, batch(f"b{i}", run_id)) for i, f in enumerate(frames)]
    sink.close(ok)
    return counts


def rows(tmp_path: Path, sql: str, db: str = "target/etrmflow.db") -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql)]


def tables(tmp_path: Path) -> list[str]:
    found = rows(tmp_path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    return [r["name"] for r in found]


def sqlite(**options: Any) -> SqliteSink:
    return SqliteSink({"table": "trades", **options})


# ---------------------------------------------------------------------------------------------
# Registration and metadata
# ---------------------------------------------------------------------------------------------

def test_plugin_registers_the_three_sinks() -> None:
    manager = pluggy.PluginManager("etrmflow")
    manager.add_hookspecs(hookspecs)
    manager.register(sinks_plugin, name="etrmflow.builtins.sinks")
    registry = Registry(manager)
    assert registry.names(Kind.SINK) == ["csv", "parquet", "postgres", "sqlite"]
    assert registry.get(Kind.SINK, "sqlite") is SqliteSink


@pytest.mark.parametrize("cls", [SqliteSink, ParquetSink, CsvSink])
def test_docstring_example_matches_the_options_schema(cls: type) -> None:
    Draft202012Validator.check_schema(cls.options_schema)
    example = yaml.safe_load(cls.__doc__.split("Example::", 1)[1])["sinks"][0]
    assert example.pop("type") == cls.type_name
    assert list(Draft202012Validator(cls.options_schema).iter_errors(example)) == []
    assert list(Draft202012Validator(cls.options_schema).iter_errors({**example, "extra": 1}))


# ---------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------

def test_upsert_rerun_adds_no_row_and_updates_values(tmp_path: Path) -> None:
    assert run(sqlite(), tmp_path, frame(trade("T1"), trade("T2"))) == [2]
    run(sqlite(), tmp_path, frame(trade("T1", price=41.0), trade("T2", price=42.5)), run_id="run-2")
    found = rows(tmp_path, "SELECT * FROM trades ORDER BY trade_id")
    assert [(r["trade_id"], r["price"], r["_etrmflow_run_id"]) for r in found] == [
        ("T1", 41.0, "run-2"), ("T2", 42.5, "run-2")]
    assert list(found[0]) == list(TRADES.column_types()) + LINEAGE
    assert found[0]["_etrmflow_batch_id"] == "b0"
    assert found[0]["_etrmflow_page_sha256"] == "sha-b0"
    assert LOADED_AT.fullmatch(found[0]["_etrmflow_loaded_at"])


def test_composite_key_keeps_each_version(tmp_path: Path) -> None:
    sink = sqlite()
    sink.open(context(tmp_path))
    assert sink.describe() == "sqlite target/etrmflow.db table trades (upsert on trade_id, version)"
    sink.write(frame(trade("T1", 1, 10.0), trade("T1", 2, 20.0)), batch("b0"))
    sink.write(frame(trade("T1", 2, 25.0)), batch("b1"))
    sink.close(True)
    found = rows(tmp_path, "SELECT version, price FROM trades ORDER BY version")
    assert found == [{"version": 1, "price": 10.0}, {"version": 2, "price": 25.0}]


def test_key_option_overrides_the_contract_key(tmp_path: Path) -> None:
    sink = sqlite(key=["trade_id"])
    assert sink.describe() == "sqlite target/etrmflow.db table trades (upsert on trade_id)"
    run(sink, tmp_path, frame(trade("T1", 1, 10.0), trade("T1", 2, 20.0)))
    assert rows(tmp_path, "SELECT version, price FROM trades") == [{"version": 2, "price": 20.0}]


def test_upsert_without_any_key_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(SinkError) as caught:
        sqlite().open(context(tmp_path, contract=NO_KEY))
    assert str(caught.value) == (
        "sqlite sink (table trades): mode upsert needs a key, but contract 'prices' has no "
        "primary_key and the sink has no 'key' option; add one of them or use mode: append")


def test_upsert_into_a_table_with_another_key_fails_at_open(tmp_path: Path) -> None:
    run(sqlite(mode="append"), tmp_path, frame(trade("T1")))
    with pytest.raises(SinkError, match=r"has primary key \(none\) but mode upsert needs "
                                        r"\(trade_id, version\)"):
        sqlite().open(context(tmp_path))


def test_append_inserts_every_row_but_a_rewritten_batch_only_once(tmp_path: Path) -> None:
    sink = sqlite(mode="append", path="out/append.db")
    assert sink.describe() == "sqlite out/append.db table trades (append)"
    sink.open(context(tmp_path))
    sink.write(frame(trade("T1"), trade("T2")), batch("b0"))
    sink.write(frame(trade("T1")), batch("b1"))
    sink.write(frame(trade("T1"), trade("T2")), batch("b0"))  # a retry of the same batch
    sink.close(True)
    run(sqlite(mode="append", path="out/append.db"), tmp_path, frame(trade("T3")), run_id="run-2")
    found = rows(tmp_path, "SELECT trade_id, _etrmflow_run_id AS run FROM trades "
                           "ORDER BY run, trade_id", db="out/append.db")
    assert [(r["trade_id"], r["run"]) for r in found] == [
        ("T1", "run-1"), ("T1", "run-1"), ("T2", "run-1"), ("T3", "run-2")]


def test_replace_swaps_in_only_when_the_run_succeeds(tmp_path: Path) -> None:
    run(sqlite(mode="replace"), tmp_path, frame(trade("T1"), trade("T2")))
    failed = sqlite(mode="replace")
    failed.open(context(tmp_path, "run-2"))
    failed.write(frame(trade("T9")), batch("b0", "run-2"))
    # While the run goes on, readers still see the previous table.
    assert [r["trade_id"] for r in rows(tmp_path, "SELECT trade_id FROM trades")] == ["T1", "T2"]
    failed.close(False)
    assert [r["trade_id"] for r in rows(tmp_path, "SELECT trade_id FROM trades")] == ["T1", "T2"]
    assert tables(tmp_path) == ["trades", "trades__staging"]  # kept for --resume; a fresh run drops it
    run(sqlite(mode="replace"), tmp_path, frame(trade("T3")), run_id="run-3")
    assert [r["trade_id"] for r in rows(tmp_path, "SELECT trade_id FROM trades")] == ["T3"]
    assert tables(tmp_path) == ["trades"]


def test_a_batch_with_a_null_key_is_rolled_back_whole(tmp_path: Path) -> None:
    sink = sqlite()
    sink.open(context(tmp_path))
    sink.write(frame(trade("T1")), batch("b0"))
    bad = frame(trade("T2"), trade("T3"), trade(None))  # type: ignore[arg-type]
    with pytest.raises(SinkError) as caught:
        sink.write(bad, batch("b1"))
    assert str(caught.value).startswith("sqlite sink: writing batch b1 to table trades in ")
    assert str(caught.value).endswith(" failed and was rolled back: NOT NULL constraint failed: "
                                      "trades.trade_id")
    sink.close(False)
    assert [r["trade_id"] for r in rows(tmp_path, "SELECT trade_id FROM trades")] == ["T1"]


def test_an_unwritable_value_rolls_back_the_batch_and_its_new_column(tmp_path: Path) -> None:
    sink = sqlite()
    sink.open(context(tmp_path))
    sink.write(frame(trade("T1")), batch("b0"))
    with pytest.raises(SinkError, match="rolled back"):
        sink.write(frame(trade("T2", note="fine"), trade("T3", note=object())), batch("b1"))
    sink.write(frame(trade("T4")), batch("b2"))  # the sink is still usable
    sink.close(True)
    found = rows(tmp_path, "SELECT * FROM trades ORDER BY trade_id")
    assert [r["trade_id"] for r in found] == ["T1", "T4"]
    assert "note" not in found[0]


def test_a_new_column_is_added_and_a_missing_one_is_written_as_null(tmp_path: Path) -> None:
    run(sqlite(), tmp_path, frame(trade("T1")), frame(trade("T2", comment="late", count=3)),
        frame(trade("T2", price=1.5)))
    found = rows(tmp_path, "SELECT trade_id, price, comment, count FROM trades ORDER BY trade_id")
    # The last upsert of T2 had no comment: the row is the new record, not a blend of two.
    assert found == [{"trade_id": "T1", "price": 40.45, "comment": None, "count": None},
                     {"trade_id": "T2", "price": 1.5, "comment": None, "count": None}]
    columns = rows(tmp_path, "SELECT name, type FROM pragma_table_info('trades')")
    assert {"name": "count", "type": "INTEGER"} in columns
    assert {"name": "comment", "type": "TEXT"} in columns


def test_nested_values_round_trip_as_sorted_compact_json(tmp_path: Path) -> None:
    legs = [{"price": 40.45, "hour": 1, "tags": ["peak"]}, {"price": 0.1, "hour": 2, "tags": []}]
    run(sqlite(), tmp_path, frame(trade("T1", legs=legs, meta={"z": 1, "a": None})))
    found = rows(tmp_path, "SELECT legs, meta FROM trades")[0]
    assert found["legs"] == ('[{"hour":1,"price":40.45,"tags":["peak"]},'
                             '{"hour":2,"price":0.1,"tags":[]}]')
    assert json.loads(found["legs"]) == legs
    assert found["meta"] == '{"a":null,"z":1}'


def test_money_reads_back_exactly(tmp_path: Path) -> None:
    prices = [40.45, 0.1, 1234567.89, 606.75, 0.30000000000000004]
    records = [trade(f"T{i}", price=p, notional=decimal.Decimal(str(p)), text_price=p)
               for i, p in enumerate(prices)]
    records[0]["text_price"] = "40.45"  # an object column of mixed values is typed TEXT
    run(sqlite(), tmp_path, frame(*records))
    found = rows(tmp_path, "SELECT price, typeof(price) AS t, notional, typeof(notional) AS nt, text_price "
                           "FROM trades ORDER BY trade_id")
    assert [r["price"] for r in found] == prices
    assert [repr(r["price"]) for r in found] == ["40.45", "0.1", "1234567.89", "606.75",
                                                 "0.30000000000000004"]
    assert {r["t"] for r in found} == {"real"}
    # Decimals in a column the contract does not declare: exact text, as the Decimals write them
    assert [r["notional"] for r in found] == [str(decimal.Decimal(str(p))) for p in prices]
    assert {r["nt"] for r in found} == {"text"}
    assert [r["text_price"] for r in found] == ["40.45", "0.1", "1234567.89", "606.75",
                                                "0.30000000000000004"]


def test_a_decimal_a_double_cannot_hold_is_refused_not_rounded(tmp_path: Path) -> None:
    sink = sqlite()
    sink.open(context(tmp_path))
    sink.write(frame(trade("T0", notional=40.45)), batch("b0"))  # floats: the column is REAL
    with pytest.raises(SinkError, match=r"decimal 1234567.891234567891 cannot be stored as a "
                                        r"float without rounding"):
        sink.write(frame(trade("T1", notional=decimal.Decimal("1234567.891234567891"))), batch("b1"))
    sink.close(False)


def test_missing_values_become_null_and_timestamps_iso_with_offset(tmp_path: Path) -> None:
    data = frame(trade("T1"), trade("T2"))
    data["volume_mwh"] = [float("nan"), 2.5]
    data["hour"] = pd.array([None, 7], dtype="Int64")
    data["ok"] = pd.array([True, None], dtype="boolean")
    data["delivery_start"] = pd.to_datetime(
        ["2025-10-26T00:00:00Z", None], utc=True).tz_convert("Europe/Berlin")
    run(sqlite(), tmp_path, data)
    found = rows(tmp_path, "SELECT volume_mwh, hour, ok, delivery_start, is_buy FROM trades "
                           "ORDER BY trade_id")
    assert found == [
        {"volume_mwh": None, "hour": None, "ok": 1, "delivery_start": "2025-10-26T02:00:00+02:00",
         "is_buy": 1},
        {"volume_mwh": 2.5, "hour": 7, "ok": None, "delivery_start": None, "is_buy": 1},
    ]


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------

def read_parquet(path: Path) -> list[dict[str, Any]]:
    table = pq.read_table(path, partitioning="hive")
    return sorted(table.to_pylist(), key=lambda r: (r["trade_id"], r["version"]))


def without_lineage(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_etrmflow_")} for r in records]


def test_parquet_partitioned_output_reads_back_equal(tmp_path: Path) -> None:
    first = [trade("T2", delivery_day="2025-03-30"), trade("T1", delivery_day="2025-03-31")]
    second = [trade("T3", price=0.1, delivery_day="2025-03-30")]
    sink = ParquetSink({"path": "target/parquet/trades", "partition_by": ["delivery_day"]})
    assert sink.describe() == "parquet target/parquet/trades (partitioned by delivery_day, zstd)"
    assert run(sink, tmp_path, frame(*first), frame(*second)) == [2, 1]
    out = tmp_path / "target/parquet/trades"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "delivery_day=2025-03-30/part-b0-0.parquet", "delivery_day=2025-03-30/part-b1-0.parquet",
        "delivery_day=2025-03-31/part-b0-0.parquet"]
    found = read_parquet(out)
    expected = [{**r, "legs": json.dumps(r["legs"], separators=(",", ":"), sort_keys=True)}
                for r in sorted(first + second, key=lambda r: r["trade_id"])]
    assert [{**r, "delivery_day": str(r["delivery_day"])} for r in without_lineage(found)] == expected
    assert [r["_etrmflow_batch_id"] for r in found] == ["b0", "b0", "b1"]
    assert sorted(p.name for p in tmp_path.joinpath("target/parquet").iterdir()) == ["trades"]


def test_parquet_failed_run_keeps_the_previous_output(tmp_path: Path) -> None:
    options = {"path": "out/trades"}
    run(ParquetSink(options), tmp_path, frame(trade("T1")))
    before = read_parquet(tmp_path / "out/trades")
    run(ParquetSink(options), tmp_path, frame(trade("T2")), run_id="run-2", ok=False)
    assert read_parquet(tmp_path / "out/trades") == before
    # the failed run's staging stays for --resume; the next fresh run clears it
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["trades", "trades.staging-run-2"]
    run(ParquetSink(options), tmp_path, frame(trade("T3")), run_id="run-3")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["trades"]
    assert [r["trade_id"] for r in read_parquet(tmp_path / "out/trades")] == ["T3"]


def test_parquet_rewritten_batch_replaces_its_part_and_schemas_agree(tmp_path: Path) -> None:
    sink = ParquetSink({"path": "out/trades", "compression": "snappy"})
    sink.open(context(tmp_path))
    gap = frame(trade("T1"), trade("T2"))
    gap["version"] = [1.0, float("nan")]  # what pandas makes of an integer column with a gap
    sink.write(gap, batch("b0"))
    sink.write(frame(trade("T3", price=1.0)), batch("b1"))
    sink.write(frame(trade("T3", price=2.0)), batch("b1"))
    sink.close(True)
    table = pq.read_table(tmp_path / "out/trades")
    assert str(table.schema.field("version").type) == "int64"
    assert sorted(zip(table["trade_id"].to_pylist(), table["version"].to_pylist(),
                      table["price"].to_pylist())) == [("T1", 1, 40.45), ("T2", None, 40.45),
                                                       ("T3", 1, 2.0)]


def test_parquet_rewritten_batch_leaves_no_file_in_its_old_partition(tmp_path: Path) -> None:
    sink = ParquetSink({"path": "out/trades", "partition_by": ["delivery_day"]})
    sink.open(context(tmp_path))
    sink.write(frame(trade("T1", delivery_day="2025-03-30")), batch("b0"))
    sink.write(frame(trade("T1", delivery_day="2025-03-31")), batch("b0"))
    sink.close(True)
    out = tmp_path / "out/trades"
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.parquet")] == [
        "delivery_day=2025-03-31/part-b0-0.parquet"]


def test_parquet_batch_that_cannot_be_written_is_left_out(tmp_path: Path) -> None:
    sink = ParquetSink({"path": "out/trades", "partition_by": ["delivery_day"]})
    sink.open(context(tmp_path))
    sink.write(frame(trade("T1")), batch("b0"))
    with pytest.raises(SinkError, match=r"^parquet sink: writing batch b1 to .*out/trades failed: "):
        sink.write(frame(trade("T2", mixed=1), trade("T3", mixed="x")), batch("b1"))
    sink.close(True)
    assert [r["trade_id"] for r in read_parquet(tmp_path / "out/trades")] == ["T1"]


def test_parquet_crash_between_renames_restores_the_last_output(tmp_path: Path) -> None:
    run(ParquetSink({"path": "out/trades"}), tmp_path, frame(trade("T1")))
    (tmp_path / "out/trades").rename(tmp_path / "out/trades.old-run-2")  # crash mid-swap
    (tmp_path / "out/trades.staging-run-2").mkdir()
    sink = ParquetSink({"path": "out/trades"})
    sink.open(context(tmp_path, "run-3"))
    assert [r["trade_id"] for r in read_parquet(tmp_path / "out/trades")] == ["T1"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["trades", "trades.staging-run-3"]
    sink.close(False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["trades", "trades.staging-run-3"]


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------

def read_csv(path: Path, delimiter: str = ",") -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def test_csv_writes_one_header_and_json_for_nested_values(tmp_path: Path) -> None:
    sink = CsvSink({"path": "out/trades.csv", "delimiter": ";"})
    assert sink.describe() == "csv out/trades.csv"
    gaps = frame(trade("T2"), trade("T3"))
    gaps["volume_mwh"] = [float("nan"), 1.5]
    gaps["version"] = [float("nan"), 2.0]  # what pandas makes of an integer column with a gap
    run(sink, tmp_path, frame(trade("T1", price=0.1)), gaps)
    found = read_csv(tmp_path / "out/trades.csv", ";")
    assert found[0] == list(TRADES.column_types()) + LINEAGE
    assert [r[:10] for r in found[1:]] == [
        ["T1", "1", "0.1", "15.0", "True", '[{"hour":1,"price":0.1}]', "2025-03-30",
         "run-1", "b0", "sha-b0"],
        ["T2", "", "40.45", "", "True", '[{"hour":1,"price":40.45}]', "2025-03-30",
         "run-1", "b1", "sha-b1"],
        ["T3", "2", "40.45", "1.5", "True", '[{"hour":1,"price":40.45}]', "2025-03-30",
         "run-1", "b1", "sha-b1"]]
    assert all(LOADED_AT.fullmatch(r[10]) for r in found[1:])


def test_csv_failed_run_keeps_the_previous_file(tmp_path: Path) -> None:
    run(CsvSink({"path": "trades.csv"}), tmp_path, frame(trade("T1")))
    before = (tmp_path / "trades.csv").read_bytes()
    run(CsvSink({"path": "trades.csv"}), tmp_path, frame(trade("T2")), run_id="run-2", ok=False)
    assert (tmp_path / "trades.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trades.csv", "trades.csv.staging-run-2"]


@pytest.mark.parametrize("make", [lambda: CsvSink({"path": "out/trades.csv"}),
                                  lambda: ParquetSink({"path": "out/trades", "partition_by": ["delivery_day"]})],
                         ids=["csv", "parquet"])
def test_a_resumed_run_completes_the_interrupted_runs_output(tmp_path: Path, make: Any) -> None:
    first = make()
    first.open(context(tmp_path, "run-1"))
    first.write(frame(trade("T1")), batch("b0"))
    first.write(frame(trade("T2")), batch("b1"))
    first.close(False)  # the run failed after two batches
    resumed = make()
    resumed.open(dataclasses.replace(context(tmp_path, "run-1"), resume=True))
    resumed.write(frame(trade("T2")), batch("b1"))  # the page in flight comes again
    resumed.write(frame(trade("T3")), batch("b2"))
    resumed.close(True)
    fresh = make()
    fresh.open(context(tmp_path / "clean", "run-9"))
    for index, trade_id in enumerate(["T1", "T2", "T3"]):
        fresh.write(frame(trade(trade_id)), batch(f"b{index}"))
    fresh.close(True)
    def content(root: Path) -> list[str]:
        if isinstance(resumed, CsvSink):
            rows = read_csv(root / "out/trades.csv")
            keep = [i for i, name in enumerate(rows[0]) if not name.startswith("_etrmflow_")]
            return sorted(str([row[i] for i in keep]) for row in rows)
        return sorted(map(str, without_lineage(read_parquet(root / "out/trades"))))

    assert content(tmp_path) == content(tmp_path / "clean")
    assert len(content(tmp_path)) == 3 + isinstance(resumed, CsvSink)  # three rows (+ the CSV header)


def test_csv_batches_with_other_columns_are_aligned_under_one_header(tmp_path: Path) -> None:
    sink = CsvSink({"path": "trades.csv"})
    sink.open(context(tmp_path, contract=NO_KEY))
    sink.write(frame({"price": 1.5}), batch("b0"))
    sink.write(frame({"price": 2.5, "zone": "10YNL----------L"}), batch("b1"))
    sink.write(frame({"price": 3.5}), batch("b0"))  # a rewrite replaces the first part
    sink.close(True)
    found = [r[:3] for r in read_csv(tmp_path / "trades.csv")]
    assert found == [["price", "zone", "_etrmflow_run_id"], ["3.5", "", "run-1"],
                     ["2.5", "10YNL----------L", "run-1"]]


def test_pipelines_opening_a_new_database_at_once_all_get_it_in_wal_mode(tmp_path: Path) -> None:
    # Switching a new file to WAL takes it for itself and skips the busy handler: without the
    # retry in wal_connection about one try in ten of these fails with "database is locked".
    import threading

    from etrmflow.sinks.common import wal_connection

    errors: list[str] = []

    def open_and_write(path: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            db = wal_connection(path)
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS t (x)")
            db.execute("COMMIT")
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            db.close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))

    for trial in range(60):
        path, start = str(tmp_path / f"{trial}.db"), threading.Barrier(4)
        threads = [threading.Thread(target=open_and_write, args=(path, start)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
