"""Value fidelity of the sinks: a validated record reaches every sink once and unchanged.

Every test writes real files or real databases (SQLite in tmp_path, PostgreSQL from the test
kit's server) and reads the stored values back with the database's or format's own reader.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
import types
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from etrmflow.components import BatchInfo, ContractInfo, SinkContext
from etrmflow.engine.processing import PageProcessor
from etrmflow.errors import SinkError
from etrmflow.secrets import SecretStore
from etrmflow.sinks import CsvSink, ParquetSink, PostgresSink, SqliteSink
from etrmflow.testing import PostgresDatabase

DEALS = ContractInfo(name="deals", version="1", primary_key=("deal_id",), schema={
    "type": "object", "properties": {
        "deal_id": {"type": "string"},
        "qty": {"type": ["integer", "null"]},
        "price": {"type": ["number", "null"]},
        "note": {"type": ["string", "null"]},
        "legs": {"type": ["array", "null"]},
        "amount": {"type": "number", "x-etrmflow-decimal": {"scale": 2, "precision": 38}},
        "units": {"type": "number", "x-etrmflow-decimal": {"scale": 0, "precision": 38}},
    }})
SECRET = "PG_FIDELITY_PASSWORD"
SINKS = ["sqlite", "csv", "parquet", "postgres"]


def batch(batch_id: str, run_id: str = "run-1") -> BatchInfo:
    return BatchInfo(run_id=run_id, batch_id=batch_id, page_sha256=f"sha-{batch_id}", pipeline="deals")


class Target:
    """One kind of sink, opened, written and closed the way the engine does, and read back."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.database: PostgresDatabase | None = None
        if kind == "postgres":
            self.database = request.getfixturevalue("postgresql_database")

    def sink(self, **options: Any) -> Any:
        if self.kind == "sqlite":
            return SqliteSink({"table": "deals", **options})
        if self.kind == "csv":
            return CsvSink({"path": "out/deals.csv", **options})
        if self.kind == "parquet":
            return ParquetSink({"path": "out/deals", **options})
        assert self.database is not None
        dsn = f"postgresql://postgres@127.0.0.1:{self.database.port}/{self.database.dbname}"
        return PostgresSink({"dsn": dsn, "password": f"${{secret:{SECRET}}}", "table": "deals", **options})

    def context(self, run_id: str = "run-1", contract: ContractInfo = DEALS) -> SinkContext:
        secrets = SecretStore(environ={SECRET: self.database.password}) if self.database else None
        return SinkContext(pipeline="deals", run_id=run_id, contract=contract, project_dir=str(self.tmp_path),
                           target_dir=str(self.tmp_path / "target"), secrets=secrets)

    def run(self, *frames: pd.DataFrame, run_id: str = "run-1", contract: ContractInfo = DEALS,
            **options: Any) -> None:
        sink = self.sink(**options)
        sink.open(self.context(run_id, contract))
        try:
            for i, frame in enumerate(frames):
                sink.write(frame, batch(f"b{i}", run_id))
        except BaseException:
            sink.close(False)
            raise
        sink.close(True)

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row without lineage, sorted by deal_id, in the reader's own types."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.tmp_path / "target/etrmflow.db") as db:
                db.row_factory = sqlite3.Row
                found = [dict(r) for r in db.execute("SELECT * FROM deals")]
        elif self.kind == "csv":
            csv.field_size_limit(2**31 - 1)  # our reader's limit, not the sink's: a 1 MB note
            with (self.tmp_path / "out/deals.csv").open(encoding="utf-8", newline="") as handle:
                found = list(csv.DictReader(handle))
        elif self.kind == "parquet":
            found = pq.read_table(self.tmp_path / "out/deals").to_pylist()
        else:
            assert self.database is not None
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.database.dsn, row_factory=dict_row) as db:
                found = db.execute("SELECT * FROM deals").fetchall()
        found = [{k: v for k, v in r.items() if not k.startswith("_etrmflow_")} for r in found]
        return sorted(found, key=lambda r: r["deal_id"])


@pytest.fixture(params=SINKS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return Target(request.param, tmp_path, request)


def deals(**columns: list[Any]) -> pd.DataFrame:
    """A frame with one deal per value: deal_id D00, D01, ... plus the given columns."""
    size = len(next(iter(columns.values())))
    return pd.DataFrame({"deal_id": [f"D{i:02d}" for i in range(size)], **columns})


def column(target: Target, rows: list[dict[str, Any]], name: str) -> list[Any]:
    return [row[name] for row in rows]


# ---------------------------------------------------------------------------------------------
# Value fidelity
# ---------------------------------------------------------------------------------------------

FLOATS = [0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, 123456789.12345679, -1.0000000000000002,
          2.0 ** 53, 40.45]


def test_floats_keep_all_seventeen_digits(target: Target) -> None:
    target.run(deals(price=FLOATS))
    stored = column(target, target.rows(), "price")
    if target.kind == "csv":
        stored = [float(text) for text in stored]
    assert [repr(v) for v in stored] == [repr(v) for v in FLOATS]


INTEGERS = [2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63), 0, -1]


def test_integers_at_the_ends_of_int64_are_exact(target: Target) -> None:
    target.run(deals(qty=INTEGERS))
    stored = column(target, target.rows(), "qty")
    if target.kind == "csv":
        stored = [int(text) for text in stored]
    assert stored == INTEGERS
    assert all(type(v) is int for v in stored)


@pytest.mark.parametrize("big", [2 ** 63, 2 ** 64 + 7], ids=["uint64", "beyond-uint64"])
def test_an_integer_beyond_int64_is_stored_exactly_or_refused_whole(target: Target, big: int) -> None:
    target.run(deals(qty=[1]))
    try:
        target.run(deals(qty=[2, big]).assign(deal_id=["E0", "E1"]), run_id="run-2", **_appending(target))
    except SinkError:
        assert column(target, target.rows(), "qty") == ([1] if target.kind != "csv" else ["1"])
        return
    stored = column(target, target.rows(), "qty")
    assert [int(v) for v in stored] == [2, big]  # never a rounded float (csv, parquet: replaced)


def test_sqlite_refuses_an_integer_a_number_column_would_round(tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    # The contract says number (REAL); 2**53 + 1 arrives as an int64 column. SQLite's REAL
    # affinity turns it into the double 9007199254740992.0 without a word, where the postgres
    # sink refuses it and the parquet sink fails the cast: the write must fail, not round.
    target = Target("sqlite", tmp_path, request)
    target.run(deals(price=[2 ** 53]))
    with pytest.raises(SinkError, match="9007199254740993 cannot be stored"):
        target.run(deals(price=[7, 2 ** 53 + 1]), run_id="run-2")
    assert column(target, target.rows(), "price") == [2.0 ** 53]


STRINGS = ["€ Zürich ☃", "𝄞 🎻 \U0010ffff astral", 'a "quoted", line\nbreak\r\nand\ttab ', "x" * 1_000_000,
           "  padded  ", "0012", "NULL", "\\N"]


def test_strings_keep_every_character(target: Target) -> None:
    target.run(deals(note=STRINGS))
    assert column(target, target.rows(), "note") == STRINGS


@pytest.mark.parametrize("kind", ["sqlite", "parquet", "postgres"])  # CSV has no NULL: both are empty
def test_an_empty_string_stays_apart_from_a_missing_value(kind: str, tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    target = Target(kind, tmp_path, request)
    target.run(deals(note=["", None, "x"]))
    assert column(target, target.rows(), "note") == ["", None, "x"]


def test_a_nul_character_is_kept_or_the_batch_is_refused_whole(target: Target) -> None:
    target.run(deals(note=["before"]))
    try:
        target.run(deals(note=["ok", "nul\x00inside"]).assign(deal_id=["E0", "E1"]), run_id="run-2",
                   **_appending(target))
    except SinkError as exc:
        assert target.kind == "postgres", exc  # text cannot hold NUL there; elsewhere it must be kept
        assert "0x00" in str(exc)
        assert column(target, target.rows(), "note") == ["before"]
        return
    assert column(target, target.rows(), "note")[-2:] == ["ok", "nul\x00inside"]


def _appending(target: Target) -> dict[str, Any]:
    return {"mode": "append"} if target.kind in ("sqlite", "postgres") else {}


def test_declared_decimals_keep_every_digit_at_scale_zero_and_at_precision_38(target: Target) -> None:
    amounts = [Decimal("123456789012345678901234567890123456.78"), Decimal("-0.01"), Decimal("0.00"),
               Decimal("-999999999999999999999999999999999999.99")]
    units = [Decimal(99999999999999999999999999999999999999), Decimal(1), Decimal(-12345678901234567890),
             Decimal(0)]
    target.run(deals(amount=amounts, units=units))
    rows = target.rows()
    stored_amounts, stored_units = column(target, rows, "amount"), column(target, rows, "units")
    if target.kind in ("sqlite", "csv"):  # text, the exact digits at the declared scale
        assert stored_amounts == [format(v, "f") for v in amounts]
        assert stored_units == [format(v, "f") for v in units]
    else:
        assert [str(v) for v in stored_amounts] == [str(v) for v in amounts]
        assert [str(v) for v in stored_units] == [str(v) for v in units]


def test_decimals_given_as_ints_and_floats_are_quantized_not_rounded(target: Target) -> None:
    target.run(deals(amount=[Decimal("1E+2"), 7, 40.5, 0.1], units=[Decimal("1E+3"), 2 ** 70, 12.0, 3]))
    rows = target.rows()
    amounts = [str(v) for v in column(target, rows, "amount")]
    units = [str(v) for v in column(target, rows, "units")]
    assert amounts == ["100.00", "7.00", "40.50", "0.10"]
    assert units == ["1000", str(2 ** 70), "12", "3"]


def test_nested_values_keep_their_contents(target: Target) -> None:
    legs = [[{"z": "𝄞", "a": 2 ** 63 - 1, "f": 0.1 + 0.2, "n": None, "deep": [[1, {"x": "é"}]], "t": True}],
            [], [1.7976931348623157e308, "", {"": 0}]]
    target.run(deals(legs=legs))
    stored = column(target, target.rows(), "legs")
    if target.kind != "postgres":  # JSON text, compact with sorted keys
        assert stored[0] == ('[{"a":9223372036854775807,"deep":[[1,{"x":"é"}]],"f":0.30000000000000004,'
                             '"n":null,"t":true,"z":"𝄞"}]')
        stored = [json.loads(text) for text in stored]
    else:  # jsonb keeps the number's digits; Python reads 1.797...e308 back as the int they spell
        assert float(stored[2][0]) == legs[2][0]
        stored[2][0] = legs[2][0]
    assert stored == legs
    assert repr(stored[0][0]["f"]) == "0.30000000000000004"


def test_timestamps_keep_microseconds_and_odd_offsets(target: Target) -> None:
    zones = [dt.timezone(dt.timedelta(hours=5, minutes=45)), dt.timezone(dt.timedelta(hours=-3, minutes=-30)),
             dt.timezone(dt.timedelta(hours=14)), dt.timezone.utc]
    instants = [dt.datetime(2025, 3, 30, 1, 59, 59, 999999, tzinfo=zone) for zone in zones]
    frame = deals(note=["x"] * 4)
    frame["delivery_start"] = pd.Series(instants, dtype=object)
    target.run(frame)
    stored = column(target, target.rows(), "delivery_start")
    if target.kind != "postgres":  # an undeclared column of mixed offsets: ISO text, offsets kept
        assert stored == [v.isoformat() for v in instants]
    else:  # a timestamp type: the instant, to the microsecond
        assert [v.timestamp() for v in stored] == [v.timestamp() for v in instants]
        assert [v.microsecond for v in stored] == [999999] * 4


def test_nanoseconds_are_kept_or_refused_never_rounded(target: Target) -> None:
    frame = deals(note=["x", "y"])
    frame["executed_at"] = pd.to_datetime(["2025-03-30T00:00:00.123456789Z", "2025-03-30T00:00:00.000000001Z"])
    if target.kind == "postgres":  # timestamptz keeps microseconds: refused, not rounded to .123457
        with pytest.raises(SinkError, match=r"2025-03-30T00:00:00.123456789\+00:00 has nanoseconds"):
            target.run(frame)
        return
    target.run(frame)
    stored = column(target, target.rows(), "executed_at")
    if target.kind != "parquet":
        assert stored == ["2025-03-30T00:00:00.123456789+00:00", "2025-03-30T00:00:00.000000001+00:00"]
    else:
        assert [v.value % 10**9 for v in map(pd.Timestamp, stored)] == [123456789, 1]


# ---------------------------------------------------------------------------------------------
# Idempotency: keys, repeats, columns that come and go
# ---------------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return Target(request.param, tmp_path, request)


def test_the_later_record_of_a_key_in_one_page_wins_whole(table: Target) -> None:
    page = pd.DataFrame([{"deal_id": "A", "qty": 1, "note": "first", "legs": [1]},
                         {"deal_id": "B", "qty": 5, "note": "only"},
                         {"deal_id": "A", "qty": 2}])  # the later version lacks note and legs
    table.run(page)
    assert [(r["deal_id"], r["qty"], r["note"], r["legs"]) for r in table.rows()] == [
        ("A", 2, None, None), ("B", 5, "only", None)]


@pytest.mark.parametrize("mode", ["upsert", "replace_partition"])
def test_the_same_page_written_twice_leaves_one_row_per_record(table: Target, mode: str) -> None:
    options: dict[str, Any] = {"mode": mode}
    if mode == "replace_partition":
        options["partition_by"] = ["note"]
    page = deals(qty=[1, 2, 3], note=["p", "p", "q"], amount=[Decimal("1.10"), Decimal("2.20"), None])
    table.run(page, page, **options)
    table.run(page, run_id="run-2", **options)
    rows = table.rows()
    assert [(r["deal_id"], r["qty"], r["note"]) for r in rows] == [("D00", 1, "p"), ("D01", 2, "p"), ("D02", 3, "q")]
    assert [str(r["amount"]) if r["amount"] is not None else None for r in rows] == ["1.10", "2.20", None]


def test_append_keeps_a_batch_once_when_it_is_retried_after_failing(table: Target) -> None:
    sink = table.sink(mode="append")
    sink.open(table.context())
    good = deals(qty=[1, 2])
    sink.write(good, batch("b0"))
    with pytest.raises(SinkError):
        sink.write(deals(qty=[3, 2 ** 64]), batch("b1"))
    sink.write(deals(qty=[3, 4]), batch("b1"))  # the page came again, now writable
    sink.write(good, batch("b0"))  # and an earlier page again
    sink.close(True)
    assert sorted(r["qty"] for r in table.rows()) == [1, 2, 3, 4]


def test_a_later_version_without_a_field_nulls_it_across_pages(table: Target) -> None:
    first = pd.DataFrame([{"deal_id": "A", "qty": 1, "note": "old", "amount": Decimal("5.00"),
                           "legs": [{"h": 1}], "broker": "ICAP"}])
    second = pd.DataFrame([{"deal_id": "A", "qty": 2}])
    table.run(first, second)
    [row] = table.rows()
    assert (row["qty"], row["note"], row["amount"], row["legs"], row["broker"]) == (2, None, None, None, None)


def test_an_undeclared_column_typed_by_an_earlier_page_keeps_later_text_as_sent(table: Target) -> None:
    # Drift: "ref" is not in the contract. Page 1 makes it a number column; page 2 sends the
    # text "0012". Stored as 12.0 it would be silently altered; kept or refused is fine.
    first = pd.DataFrame([{"deal_id": "A", "ref": 1.5}])
    second = pd.DataFrame([{"deal_id": "B", "ref": "0012"}])
    try:
        table.run(first, second)
    except SinkError:
        assert [r["deal_id"] for r in table.rows()] == ["A"]
        return
    assert [(r["deal_id"], r["ref"]) for r in table.rows()] == [("A", 1.5), ("B", "0012")]


def test_csv_publishes_a_long_value_when_batches_bring_other_columns(tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    # The parts are joined at close; a part whose columns differ from the header is re-read with
    # csv.reader, whose default field limit (128 KiB) failed the close and lost the staged run.
    target = Target("csv", tmp_path, request)
    long_note = "é" * 300_000
    before = csv.field_size_limit(131_072)  # the default, whatever an earlier test set
    try:
        target.run(deals(note=[long_note]), pd.DataFrame([{"deal_id": "D01", "broker": "ICAP"}]))
    finally:
        csv.field_size_limit(before)
    rows = target.rows()
    assert [(r["deal_id"], r["note"], r["broker"]) for r in rows] == [("D00", long_note, ""), ("D01", "", "ICAP")]


# ---------------------------------------------------------------------------------------------
# Atomicity: a value refused in the middle of a batch leaves nothing of that batch
# ---------------------------------------------------------------------------------------------

def _bad_at(row: int, size: int, kind: str) -> pd.DataFrame:
    if kind in ("sqlite", "postgres"):  # refused by the database itself, half-way through the rows
        qty: list[Any] = list(range(size))
        qty[row] = 2 ** 64
        return pd.DataFrame({"deal_id": [f"N{i:04d}" for i in range(size)], "qty": qty, "note": "new"})
    amounts: list[Any] = [Decimal(i) for i in range(size)]
    amounts[row] = Decimal("1.005")  # finer than the declared scale
    return pd.DataFrame({"deal_id": [f"N{i:04d}" for i in range(size)], "amount": amounts, "note": "new"})


def test_a_value_refused_in_row_500_of_1000_leaves_no_partial_batch(target: Target) -> None:
    sink = target.sink(**_appending(target))
    sink.open(target.context())
    sink.write(deals(qty=[1], note=["kept"]), batch("b0"))
    with pytest.raises(SinkError):
        sink.write(_bad_at(500, 1000, target.kind), batch("b1"))
    sink.write(deals(qty=[2], note=["after"]).assign(deal_id="Z"), batch("b2"))
    sink.close(True)
    rows = target.rows()
    assert [r["deal_id"] for r in rows] == ["D00", "Z"]
    assert [r["note"] for r in rows] == ["kept", "after"]


# ---------------------------------------------------------------------------------------------
# The engine's hand-off: records as validated -> the frame the sinks get
# ---------------------------------------------------------------------------------------------

def test_an_optional_integer_beyond_2_53_reaches_the_sink_exactly(tmp_path: Path) -> None:
    # Page of validated records where one lacks the optional integer: the frame the engine
    # builds must not make the column float64 and round 9007199254740993 to ...992.
    context = SinkContext(pipeline="deals", run_id="run-1", contract=DEALS, project_dir=str(tmp_path),
                          target_dir=str(tmp_path / "target"))
    plan = types.SimpleNamespace(name="deals", contract=types.SimpleNamespace(schema=dict(DEALS.schema),
                                                                          primary_key=DEALS.primary_key))
    sink = SqliteSink({"table": "deals"})
    processor = PageProcessor(plan=plan, run_id="run-1", vars={}, validators=[], transforms=[],  # type: ignore[arg-type]
                              sinks=[sink], dead_letter=None, context=context)  # type: ignore[arg-type]
    sink.open(processor.sink_context)
    processor.write([{"deal_id": "A", "qty": 2 ** 53 + 1}, {"deal_id": "B"}, {"deal_id": "C", "qty": 2 ** 62 + 1}],
                    batch("b0"))
    sink.close(True)
    with sqlite3.connect(tmp_path / "target/etrmflow.db") as db:
        assert db.execute("SELECT deal_id, qty, typeof(qty) FROM deals ORDER BY deal_id").fetchall() == [
            ("A", 2 ** 53 + 1, "integer"), ("B", None, "null"), ("C", 2 ** 62 + 1, "integer")]
