"""The postgres sink against a real PostgreSQL server that the test session starts itself."""

from __future__ import annotations

import datetime as dt
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from jsonschema import Draft202012Validator

from etrmflow.components import BatchInfo, ContractInfo, Kind, SinkContext
from etrmflow.errors import SinkError
from etrmflow.plugins import Registry
from etrmflow.secrets import SecretStore
from etrmflow.sinks import PostgresSink
from etrmflow.sinks.pg_tables import value_change
from etrmflow.testing import PostgresDatabase

MONEY = {"type": "number", "x-etrmflow-decimal": {"scale": 2, "precision": 18}}
TRADES = ContractInfo(
    name="trades", version="1.2.0", primary_key=("trade_id", "version"),
    schema={"type": "object", "properties": {
        "trade_id": {"type": "string"},
        "version": {"type": "integer"},
        "price": MONEY,
        "volume_mwh": {"type": ["number", "null"]},
        "is_buy": {"type": "boolean"},
        "legs": {"type": "array"},
        "delivery_day": {"type": "string"},
        "delivery_start": {"type": "string", "format": "date-time"},
    }},
)
NO_KEY = ContractInfo(name="prices", version="1", primary_key=(), schema={"type": "object", "properties": {
    "area": {"type": "string"}, "price": {"type": "number"}}})
SECRET = "PG_TEST_PASSWORD"


def trade(trade_id: str, version: int = 1, price: str = "40.45", day: str = "2025-03-30", **extra: Any) -> dict[str, Any]:
    return {"trade_id": trade_id, "version": version, "price": Decimal(price), "volume_mwh": 15.0,
            "is_buy": True, "legs": [{"price": 40.45, "hour": 1}], "delivery_day": day,
            "delivery_start": f"{day}T00:00:00+01:00", **extra}


def frame(*records: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(records))


def batch(batch_id: str, run_id: str = "run-1") -> BatchInfo:
    return BatchInfo(run_id=run_id, batch_id=batch_id, page_sha256=f"sha-{batch_id}", pipeline="trades")


class Harness:
    """Opens, writes and closes postgres sinks the way the engine does."""

    def __init__(self, database: PostgresDatabase, tmp_path: Path) -> None:
        self.database = database
        self.tmp_path = tmp_path
        self.secrets = SecretStore(environ={SECRET: database.password})

    def sink(self, **options: Any) -> PostgresSink:
        dsn = f"postgresql://postgres@127.0.0.1:{self.database.port}/{self.database.dbname}"
        return PostgresSink({"dsn": dsn, "password": f"${{secret:{SECRET}}}", "table": "trades", **options})

    def context(self, run_id: str = "run-1", contract: ContractInfo = TRADES, resume: bool = False) -> SinkContext:
        return SinkContext(pipeline="trades", run_id=run_id, contract=contract, project_dir=str(self.tmp_path),
                           target_dir=str(self.tmp_path / "target"), resume=resume, secrets=self.secrets)

    def run(self, sink: PostgresSink, *frames: pd.DataFrame, run_id: str = "run-1", ok: bool = True,
            contract: ContractInfo = TRADES, resume: bool = False, first: int = 0) -> list[int]:
        """Open, write each frame as batch b<first>, b<first+1>, ..., close."""
        sink.open(self.context(run_id, contract, resume))
        counts = [sink.write(f, batch(f"b{first + i}", run_id)) for i, f in enumerate(frames)]
        sink.close(ok)
        return counts

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.database.query(sql)

    def types(self, table: str = "trades") -> dict[str, str]:
        return dict(self.rows(f"SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                              f"WHERE a.attrelid = 'public.{table}'::regclass AND a.attnum > 0 "
                              f"AND NOT a.attisdropped ORDER BY a.attnum"))

    def tables(self) -> list[str]:
        return [name for (name,) in self.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                              "ORDER BY tablename")]


@pytest.fixture
def pg(postgresql_database: PostgresDatabase, tmp_path: Path) -> Harness:
    return Harness(postgresql_database, tmp_path)


# ---------------------------------------------------------------------------------------------
# Registration and metadata
# ---------------------------------------------------------------------------------------------

def test_the_sink_is_registered_and_its_example_is_valid() -> None:
    assert Registry.default(load_entry_points=False).get(Kind.SINK, "postgres") is PostgresSink
    example = yaml.safe_load(PostgresSink.__doc__.split("Example::", 1)[1])["sinks"][0]
    assert example.pop("type") == "postgres"
    validator = Draft202012Validator(PostgresSink.options_schema)
    assert list(validator.iter_errors(example)) == []
    assert [e.message for e in validator.iter_errors({"table": "t", "mode": "replace_partition"})] == [
        "'partition_by' is a required property"]


def test_describe_names_the_table_and_the_mode_never_the_password(pg: Harness) -> None:
    sink = pg.sink(schema="trading", dbname="warehouse", mode="replace_partition", partition_by=["delivery_day"])
    assert sink.describe() == ("postgres 127.0.0.1/warehouse table trading.trades (replace_partition, "
                               "partitions delivery_day)")
    assert PostgresSink({"dsn": "${secret:PG_DSN}", "table": "t"}).describe() == "postgres table public.t (upsert)"


# ---------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------

SELECT_TRADES = "SELECT trade_id, version, price, _etrmflow_run_id FROM trades ORDER BY trade_id, version"


def test_upsert_creates_the_table_from_the_contract_and_a_rerun_adds_no_row(pg: Harness) -> None:
    assert pg.run(pg.sink(), frame(trade("T1"), trade("T2")), frame(trade("T3"))) == [2, 1]
    first = pg.rows(SELECT_TRADES)
    pg.run(pg.sink(), frame(trade("T1"), trade("T2")), frame(trade("T3")))  # the same run again

    assert pg.rows(SELECT_TRADES) == first == [("T1", 1, Decimal("40.45"), "run-1"), ("T2", 1, Decimal("40.45"), "run-1"),
                                               ("T3", 1, Decimal("40.45"), "run-1")]
    assert pg.types() == {
        "trade_id": "text", "version": "bigint", "price": "numeric(18,2)", "volume_mwh": "double precision",
        "is_buy": "boolean", "legs": "jsonb", "delivery_day": "text", "delivery_start": "text",
        "_etrmflow_run_id": "text", "_etrmflow_batch_id": "text", "_etrmflow_page_sha256": "text",
        "_etrmflow_loaded_at": "timestamp with time zone"}
    assert pg.rows("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'trades'::regclass") == [
        ("trades_pkey", "PRIMARY KEY (trade_id, version)")]


def test_upsert_updates_values_and_lineage_and_keeps_the_last_row_of_a_key_in_a_batch(pg: Harness) -> None:
    pg.run(pg.sink(), frame(trade("T1"), trade("T2")))
    pg.run(pg.sink(), frame(trade("T1", price="41.00"), trade("T1", price="41.50"), trade("T2", version=2)),
           run_id="run-2")

    assert pg.rows(SELECT_TRADES) == [("T1", 1, Decimal("41.50"), "run-2"), ("T2", 1, Decimal("40.45"), "run-1"),
                                      ("T2", 2, Decimal("40.45"), "run-2")]


def test_upsert_sets_a_column_the_new_version_lacks_to_null(pg: Harness) -> None:
    pg.run(pg.sink(), frame(trade("T1")))
    pg.run(pg.sink(), frame({"trade_id": "T1", "version": 1, "price": Decimal("1.00")}), run_id="run-2")
    assert pg.rows("SELECT volume_mwh, legs, price FROM trades") == [(None, None, Decimal("1.00"))]


def test_a_column_that_appears_later_is_added(pg: Harness) -> None:
    pg.run(pg.sink(), frame(trade("T1")), frame(trade("T2", broker="ICAP", fee=Decimal("0.0125"), lots=3)))

    assert list(pg.types().items())[-3:] == [("broker", "text"), ("fee", "numeric"), ("lots", "bigint")]
    assert pg.rows("SELECT trade_id, broker, fee, lots FROM trades ORDER BY trade_id") == [
        ("T1", None, None, None), ("T2", "ICAP", Decimal("0.0125"), 3)]


def test_append_inserts_every_row_and_a_rewritten_batch_replaces_its_own_rows(pg: Harness) -> None:
    sink = pg.sink(mode="append")
    sink.open(pg.context(contract=NO_KEY))
    sink.write(frame({"area": "DE", "price": 1.5}, {"area": "DE", "price": 1.5}), batch("b0"))
    sink.write(frame({"area": "FR", "price": 2.0}), batch("b1"))
    sink.write(frame({"area": "DE", "price": 1.5}, {"area": "DE", "price": 1.5}), batch("b0"))  # again
    sink.close(True)
    pg.run(pg.sink(mode="append"), frame({"area": "NL", "price": 3.0}), run_id="run-2", contract=NO_KEY)

    assert pg.rows("SELECT area, price, _etrmflow_batch_id, _etrmflow_run_id FROM trades ORDER BY area") == [
        ("DE", 1.5, "b0", "run-1"), ("DE", 1.5, "b0", "run-1"), ("FR", 2.0, "b1", "run-1"), ("NL", 3.0, "b0", "run-2")]


def test_append_in_a_resumed_run_rewrites_a_batch_the_interrupted_run_wrote(pg: Harness) -> None:
    pg.run(pg.sink(mode="append"), frame({"area": "DE", "price": 1.5}), ok=False, contract=NO_KEY)
    # The resumed run fetches again the page whose checkpoint was lost: same run, same batch.
    pg.run(pg.sink(mode="append"), frame({"area": "DE", "price": 1.5}), frame({"area": "FR", "price": 2.0}),
           contract=NO_KEY, resume=True)

    assert pg.rows("SELECT area, _etrmflow_batch_id FROM trades ORDER BY area") == [("DE", "b0"), ("FR", "b1")]


def test_replace_swaps_the_table_in_only_when_the_run_succeeds(pg: Harness) -> None:
    pg.run(pg.sink(mode="replace"), frame(trade("T1"), trade("T2")))
    pg.run(pg.sink(mode="replace"), frame(trade("T3")), run_id="run-2", ok=False)

    assert [r[0] for r in pg.rows(SELECT_TRADES)] == ["T1", "T2"]
    assert pg.tables() == ["trades", "trades__staging"]  # kept for --resume
    pg.run(pg.sink(mode="replace"), frame(trade("T4")), run_id="run-2", resume=True, first=1)
    assert [r[0] for r in pg.rows(SELECT_TRADES)] == ["T3", "T4"]
    assert pg.tables() == ["trades"]
    pg.run(pg.sink(mode="replace"), frame(trade("T5")), run_id="run-3")
    assert [r[0] for r in pg.rows(SELECT_TRADES)] == ["T5"]
    assert pg.rows("SELECT conname FROM pg_constraint WHERE conrelid = 'trades'::regclass") == [("trades_pkey",)]


def test_replace_drops_a_staging_table_another_run_left(pg: Harness) -> None:
    pg.run(pg.sink(mode="replace"), frame(trade("T1")), run_id="run-1", ok=False)
    pg.run(pg.sink(mode="replace"), frame(trade("T2")), run_id="run-2")
    assert [r[0] for r in pg.rows(SELECT_TRADES)] == ["T2"]


def test_replace_with_no_rows_leaves_an_empty_table(pg: Harness) -> None:
    pg.run(pg.sink(mode="replace"), frame(trade("T1")))
    pg.run(pg.sink(mode="replace"), run_id="run-2")
    assert pg.rows("SELECT count(*) FROM trades") == [(0,)]
    assert "price" in pg.types()


def partitioned(**options: Any) -> dict[str, Any]:
    return {"mode": "replace_partition", "partition_by": ["delivery_day"], **options}


DAYS = "SELECT delivery_day, trade_id, _etrmflow_run_id FROM trades ORDER BY delivery_day, trade_id"


def test_replace_partition_replaces_the_partitions_a_run_loads_and_keeps_the_others(pg: Harness) -> None:
    pg.run(pg.sink(**partitioned()), frame(trade("A1", day="D1"), trade("A2", day="D1"), trade("B1", day="D2"),
                                           trade("C1", day="D3")))
    # run-2 reloads D1 (A2 is gone now) and D2, in two batches that both touch D2; D3 stays.
    pg.run(pg.sink(**partitioned()), frame(trade("A1", day="D1"), trade("B2", day="D2")),
           frame(trade("B3", day="D2")), run_id="run-2")

    assert pg.rows(DAYS) == [("D1", "A1", "run-2"), ("D2", "B2", "run-2"), ("D2", "B3", "run-2"),
                             ("D3", "C1", "run-1")]
    assert pg.rows("SELECT indexname FROM pg_indexes WHERE tablename = 'trades' ORDER BY 1") == [
        ("trades_partition",), ("trades_pkey",)]


def test_replace_partition_is_resume_safe(pg: Harness) -> None:
    pg.run(pg.sink(**partitioned()), frame(trade("A1", day="D1"), trade("A2", day="D1"), trade("B1", day="D2")))
    pg.run(pg.sink(**partitioned()), frame(trade("A3", day="D1")), run_id="run-2", ok=False)
    # The resumed run-2 keeps what it loaded before (A3) and rewrites its last batch.
    pg.run(pg.sink(**partitioned()), frame(trade("A3", day="D1")), frame(trade("A4", day="D1")),
           run_id="run-2", resume=True)

    assert pg.rows(DAYS) == [("D1", "A3", "run-2"), ("D1", "A4", "run-2"), ("D2", "B1", "run-1")]


def test_replace_partition_without_a_key_and_with_an_empty_partition_value(pg: Harness) -> None:
    sink_options = {"mode": "replace_partition", "partition_by": ["area"]}
    pg.run(pg.sink(**sink_options), frame({"area": "DE", "price": 1.0}, {"area": None, "price": 2.0},
                                          {"area": "FR", "price": 3.0}), contract=NO_KEY)
    pg.run(pg.sink(**sink_options), frame({"area": None, "price": 4.0}, {"area": "DE", "price": 5.0}),
           frame({"area": "DE", "price": 6.0}), run_id="run-2", contract=NO_KEY)
    pg.run(pg.sink(**sink_options), frame({"area": "DE", "price": 6.0}), run_id="run-2", contract=NO_KEY,
           resume=True, first=1)  # batch b1 again, in the resumed run

    assert pg.rows("SELECT area, price, _etrmflow_run_id FROM trades ORDER BY area NULLS FIRST, price") == [
        (None, 4.0, "run-2"), ("DE", 5.0, "run-2"), ("DE", 6.0, "run-2"), ("FR", 3.0, "run-1")]


# ---------------------------------------------------------------------------------------------
# Values: money, timestamps, JSON
# ---------------------------------------------------------------------------------------------

def test_declared_decimals_are_numeric_and_exact(pg: Harness) -> None:
    prices = ["0.10", "40.45", "1234567890123456.78", "-606.75"]
    pg.run(pg.sink(), frame(*(trade(f"T{i}", price=p) for i, p in enumerate(prices))))
    stored = [price for (price,) in pg.rows("SELECT price FROM trades ORDER BY trade_id")]
    assert [str(p) for p in stored] == prices
    assert pg.rows("SELECT sum(price) FROM trades") == [(Decimal("1234567890122890.58"),)]


def test_a_decimal_with_more_digits_than_its_scale_fails_the_batch_rather_than_round(pg: Harness) -> None:
    sink = pg.sink()
    sink.open(pg.context())
    sink.write(frame(trade("T1")), batch("b0"))
    with pytest.raises(SinkError, match=r"writing batch b1 failed and was rolled back: .*40\.455"):
        sink.write(frame(trade("T2"), trade("T3", price="40.455")), batch("b1"))
    sink.close(False)
    assert pg.rows("SELECT trade_id FROM trades") == [("T1",)]


@pytest.mark.parametrize("dtype", ["int64", "object"])
def test_an_integer_a_float_column_cannot_hold_exactly_fails_the_batch_rather_than_round(pg: Harness,
                                                                                      dtype: str) -> None:
    rows = frame(trade("T1", volume_mwh=2 ** 53), trade("T2", volume_mwh=2 ** 53 + 1))
    rows["volume_mwh"] = rows["volume_mwh"].astype(dtype)
    sink = pg.sink()
    sink.open(pg.context())
    with pytest.raises(SinkError, match=r"rolled back: column volume_mwh: 9007199254740993 cannot be stored as "
                                        r"double precision without rounding"):
        sink.write(rows, batch("b0"))
    sink.write(frame(trade("T3", volume_mwh=2 ** 53)), batch("b1"))  # exactly a float: stored as it is
    sink.close(True)
    assert pg.rows("SELECT trade_id, volume_mwh FROM trades") == [("T3", float(2 ** 53))]


def test_parsed_timestamps_become_timestamptz_and_keep_the_instant(pg: Harness) -> None:
    rows = frame(trade("T1", day="2025-03-30"), trade("T2", day="2025-10-26"))
    rows["delivery_start"] = pd.to_datetime(rows["delivery_start"], utc=True, format="ISO8601")
    pg.run(pg.sink(), rows)

    assert pg.types()["delivery_start"] == "timestamp with time zone"
    utc = dt.timezone.utc
    assert pg.rows("SELECT delivery_start FROM trades ORDER BY trade_id") == [
        (dt.datetime(2025, 3, 29, 23, tzinfo=utc),), (dt.datetime(2025, 10, 25, 23, tzinfo=utc),)]
    loaded_at = pg.rows("SELECT _etrmflow_loaded_at FROM trades")[0][0]
    assert abs(dt.datetime.now(utc) - loaded_at) < dt.timedelta(minutes=5)


def test_nested_values_are_jsonb(pg: Harness) -> None:
    legs = [{"hour": 1, "price": 40.45, "tags": ["peak"]}, {"hour": 2, "price": None}]
    pg.run(pg.sink(), frame(trade("T1", legs=legs), trade("T2", legs=[])))
    assert pg.rows("SELECT legs FROM trades ORDER BY trade_id") == [(legs,), ([],)]
    assert pg.rows("SELECT trade_id FROM trades WHERE legs @> '[{\"tags\": [\"peak\"]}]'") == [("T1",)]


# ---------------------------------------------------------------------------------------------
# All or nothing
# ---------------------------------------------------------------------------------------------

TABLE = ("CREATE TABLE trades (trade_id text, version {version}, price {price}, volume_mwh {volume}, "
         "delivery_start {start}, PRIMARY KEY (trade_id, version))")
FITTING = {"version": "bigint", "price": "numeric(18,2)", "volume": "double precision", "start": "timestamptz"}


def parsed(*records: dict[str, Any]) -> pd.DataFrame:
    rows = frame(*records)
    rows["delivery_start"] = pd.to_datetime(rows["delivery_start"], format="ISO8601")  # keeps +01:00
    return rows


@pytest.mark.parametrize(("column", "existing", "why"), [
    ("price", "numeric(18,1)", "keeps 1 decimal place, and the values have up to 2: PostgreSQL would round them"),
    ("price", "numeric", None),
    ("price", "numeric(12,4)", None),  # too small for a value is no silent change: the server refuses it
    ("volume", "real", "keeps about 6 significant digits"),
    ("version", "double precision", "keeps integers exactly only up to 2^53"),
    ("start", "timestamp without time zone", "has no time zone: PostgreSQL would drop each value's UTC offset"),
    ("start", "timestamp(0) with time zone", "keeps 0 decimal places of a second"),
])
def test_an_existing_column_that_would_change_the_values_is_refused(pg: Harness, column: str, existing: str,
                                                                    why: str | None) -> None:
    pg.rows(TABLE.format(**{**FITTING, column: existing}))
    rows = parsed(trade("T1", price="40.45", volume_mwh=15.123456789, version=2 ** 53 + 1))
    rows["delivery_start"] += pd.Timedelta(microseconds=250)
    if why is None:  # a column wide enough takes every value as it is
        pg.run(pg.sink(), rows)
        assert pg.rows("SELECT price FROM trades") == [(Decimal("40.45"),)]
        return
    sink = pg.sink()
    sink.open(pg.context())
    name = {"volume": "volume_mwh", "start": "delivery_start"}.get(column, column)
    with pytest.raises(SinkError, match=rf"rolled back: column {name} is {re.escape(existing)} in table "
                                        rf"public\.trades, .*{re.escape(why)}.*ALTER TABLE"):
        sink.write(rows, batch("b0"))
    sink.close(False)
    assert pg.rows("SELECT count(*) FROM trades") == [(0,)]


@pytest.mark.parametrize(("existing", "wanted", "changed"), [
    ("numeric(18,2)", "bigint", False), ("numeric(18,2)", "double precision", True),
    ("numeric(18,4)", "numeric(18,2)", False), ("numeric", "double precision", False),
    ("text", "numeric(18,2)", False), ("bigint", "double precision", False),  # 1.5 -> bigint: refused loudly
    ("date", "timestamp with time zone", True), ("timestamp with time zone", "timestamp without time zone", False),
    ("timestamp(6) with time zone", "timestamp with time zone", False), ("real", "bigint", True),
])
def test_which_existing_columns_would_change_values(existing: str, wanted: str, changed: bool) -> None:
    assert (value_change(existing, wanted) is not None) is changed


def test_a_batch_failing_half_way_leaves_no_row_and_no_new_column(pg: Harness) -> None:
    sink = pg.sink()
    sink.open(pg.context())
    sink.write(frame(trade("T1")), batch("b0"))
    # A new column, rows before and after the bad one: the server refuses row 3 mid-COPY.
    bad = frame(trade("T2", note="x"), trade("T3", note="y"), trade("T4", version=2 ** 63, note="z"), trade("T5"))
    with pytest.raises(SinkError, match="writing batch b1 failed and was rolled back: .*out of range"):
        sink.write(bad, batch("b1"))
    sink.write(frame(trade("T6")), batch("b2"))  # the sink goes on after a failed batch
    sink.close(True)

    assert [r[0] for r in pg.rows(SELECT_TRADES)] == ["T1", "T6"]
    assert "note" not in pg.types()


def test_a_replace_partition_batch_failing_after_its_delete_restores_the_partition(pg: Harness) -> None:
    pg.run(pg.sink(**partitioned()), frame(trade("A1", day="D1"), trade("A2", day="D1")))
    sink = pg.sink(**partitioned())
    sink.open(pg.context("run-2"))
    # The delete of D1's rows runs, then the insert meets a row without a key.
    with pytest.raises(SinkError, match="rolled back: .*null value in column"):
        sink.write(frame(trade("A3", day="D1"), trade(None, day="D1")), batch("b0", "run-2"))
    sink.close(False)

    assert pg.rows(DAYS) == [("D1", "A1", "run-1"), ("D1", "A2", "run-1")]


# ---------------------------------------------------------------------------------------------
# Refusals and connection problems
# ---------------------------------------------------------------------------------------------

def test_a_table_with_another_primary_key_is_refused(pg: Harness) -> None:
    pg.run(pg.sink(key=["trade_id"]), frame(trade("T1")))
    with pytest.raises(SinkError, match=re.escape("has primary key (trade_id) but mode upsert needs "
                                                  "(trade_id, version); drop or rename the table first")):
        pg.sink().open(pg.context())


@pytest.mark.parametrize(("options", "contract", "message"), [
    ({}, NO_KEY, "mode upsert needs a key, but contract 'prices' has no primary_key"),
    ({"mode": "replace_partition"}, TRADES, "mode replace_partition needs partition_by: [columns]"),
    ({"partition_by": ["area"]}, TRADES, "partition_by is only used by mode replace_partition"),
])
def test_inconsistent_options_are_refused_before_connecting(pg: Harness, options: dict[str, Any],
                                                            contract: ContractInfo, message: str) -> None:
    with pytest.raises(SinkError, match=re.escape(message)):
        PostgresSink({"dsn": "host=127.0.0.1 port=1", "table": "t", **options}).open(pg.context(contract=contract))


def open_error(pg: Harness, **options: Any) -> str:
    with pytest.raises(SinkError) as caught:
        PostgresSink({"table": "trades", **options}).open(pg.context())
    # No driver exception chained to it: a traceback would show what libpq was given.
    assert caught.value.__cause__ is None and (caught.value.__context__ is None or caught.value.__suppress_context__)
    return str(caught.value)


def test_a_wrong_password_is_reported_without_any_password(pg: Harness) -> None:
    pg.secrets = SecretStore(environ={SECRET: "wrong-password-31c4"})
    message = open_error(pg, dsn=f"postgresql://postgres:${{secret:{SECRET}}}@127.0.0.1:{pg.database.port}/"
                                 f"{pg.database.dbname}")
    assert message.startswith(f"postgres sink (table public.trades): cannot connect to postgres@127.0.0.1:"
                              f"{pg.database.port}/{pg.database.dbname}: ")
    assert 'password authentication failed for user "postgres"' in message
    assert "wrong-password-31c4" not in message and pg.database.password not in message


def test_an_unreachable_server_is_reported_by_address(pg: Harness) -> None:
    message = open_error(pg, host="127.0.0.1", port=1, dbname="warehouse", password=f"${{secret:{SECRET}}}")
    assert message.startswith("postgres sink (table public.trades): cannot connect to 127.0.0.1:1/warehouse: ")
    assert "Connection refused" in message and pg.database.password not in message


def test_a_malformed_dsn_is_reported_without_echoing_it(pg: Harness) -> None:
    pg.secrets = SecretStore(environ={SECRET: "p%zz-secret"})
    message = open_error(pg, dsn=f"postgresql://postgres:${{secret:{SECRET}}}@127.0.0.1/db")
    assert message == ('postgres sink (table public.trades): dsn is not a libpq connection string (key=value ...) '
                       'nor a postgresql:// URI: invalid percent-encoded token: "***"')


@pytest.mark.parametrize("options", [
    {"password": "hunter2-literal"},
    {"dsn": "postgresql://postgres:hunter2-literal@127.0.0.1:1/db"},
])
def test_a_password_written_in_the_pipeline_is_refused(pg: Harness, options: dict[str, Any]) -> None:
    message = open_error(pg, **{"host": "127.0.0.1", "port": "1", **options})
    assert "the password is written in the pipeline (or comes from env_var())" in message
    assert "secret('PGPASSWORD')" in message and "hunter2" not in message


def test_without_the_driver_the_sink_says_how_to_install_it(pg: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    sink = pg.sink()
    assert sink.describe() == "postgres table public.trades (upsert)"  # no server named: the dsn is not parsed
    message = open_error(pg, dsn=f"postgresql://postgres@127.0.0.1:{pg.database.port}/db",
                         password=f"${{secret:{SECRET}}}")
    assert message == ('postgres sink (table public.trades): the psycopg driver is not installed: '
                       'python -m pip install "etrmflow[postgres]"')


def test_an_unset_secret_is_named(pg: Harness) -> None:
    message = open_error(pg, host="127.0.0.1", password="${secret:PG_NOT_SET}")
    assert message == ("postgres sink (table public.trades): secret 'PG_NOT_SET' is not set; "
                       "export PG_NOT_SET=... in the environment that runs etrmflow")


def test_a_whole_dsn_from_a_secret_connects(pg: Harness) -> None:
    pg.secrets = SecretStore(environ={"PG_DSN": pg.database.dsn})
    pg.run(PostgresSink({"dsn": "${secret:PG_DSN}", "table": "trades", "schema": "trading"}), frame(trade("T1")))
    assert pg.rows("SELECT trade_id FROM trading.trades") == [("T1",)]
