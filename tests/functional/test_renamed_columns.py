"""Steps that rename, drop or select columns change what the sinks make of them: a renamed money
column stays exact (text at its scale in SQLite, decimal128 in Parquet, both decimals in CSV), a
renamed key column stays the key, and a dropped or unselected contract column gets no empty column.

Expected values are worked out here from the sandbox's own records, not by the steps.
"""

from __future__ import annotations

import csv
import decimal

import pyarrow as pa
import pyarrow.parquet as pq

from etrmflow.sandbox.data import is_invalid_trade, trade
from etrmflow.testing import EtrmflowProject, PostgresDatabase, SandboxFactory

from . import sandbox_project
from .test_postgres_runs import DSN, database_env

BEARER = "{type: bearer, token: sandbox-token}"
TRADES = 60
RENAMED = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - {type: rename, columns: {trade_id: deal_id, price: unit_price, notional: amount}}
  - {type: drop, columns: [legs, delivery_point]}
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: deals, mode: upsert}
  - {type: parquet, path: target/deals}
  - {type: csv, path: target/deals.csv}
"""
AGGREGATED = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - {type: aggregate, group_by: [product_code], measures: {volume: {sum: volume_mwh}}}
  - {type: rename, columns: {product_code: product}}
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: volumes, mode: upsert}
"""


def _cents(value: float) -> str:
    return str(decimal.Decimal(repr(value)).quantize(decimal.Decimal("0.01")))


def test_renamed_money_and_key_columns_keep_their_declared_types_in_every_sink(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": RENAMED})
    valid = [trade(i, vendor.config.seed) for i in range(TRADES) if not is_invalid_trade(i, vendor.config.seed)]
    expected = {(t["trade_id"], t["version"]): (_cents(t["price"]), _cents(t["notional"])) for t in valid}

    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    rerun = project.run("run", "pipelines/trades.yml")  # upsert on the renamed key: nothing added

    assert rerun.exit_code == 0, rerun.output
    columns = {row[1]: row[2] for row in project.query("PRAGMA table_info(deals)")}
    assert columns["unit_price"] == columns["amount"] == "DECIMAL_TEXT(18,2)"
    assert not {"trade_id", "price", "notional", "legs", "delivery_point"} & set(columns)
    assert [row[1] for row in project.query("PRAGMA table_info(deals)") if row[5]] == ["deal_id", "version"]
    stored = project.query("SELECT deal_id, version, unit_price, amount, typeof(amount) FROM deals")
    assert {(d, v): (p, a) for d, v, p, a, _ in stored} == expected
    assert len(stored) == len(expected) and {kind for *_, kind in stored} == {"text"}

    table = pq.read_table(project.path("target/deals"))
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    assert {(r["deal_id"], r["version"]): (str(r["unit_price"]), str(r["amount"])) for r in table.to_pylist()} == expected
    with project.path("target/deals.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["deal_id"], int(r["version"])): (r["unit_price"], r["amount"]) for r in rows} == expected
    assert "legs" not in rows[0] and "price" not in rows[0]


def test_a_group_column_renamed_after_aggregate_stays_the_sinks_key(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": AGGREGATED})
    valid = [trade(i, vendor.config.seed) for i in range(TRADES) if not is_invalid_trade(i, vendor.config.seed)]

    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    rerun = project.run("run", "pipelines/trades.yml")

    assert rerun.exit_code == 0, rerun.output
    assert [row[1] for row in project.query("PRAGMA table_info(volumes)") if row[5]] == ["product"]
    assert sorted(r[0] for r in project.query("SELECT product FROM volumes")) == sorted(
        {t["product_code"] for t in valid})


def test_a_renamed_money_column_is_numeric_in_postgres(etrmflow_project: EtrmflowProject,
                                                       sandbox_vendor_factory: SandboxFactory,
                                                       postgresql_database: PostgresDatabase) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": RENAMED.split("sinks:")[0] + f"""sinks:
  - {{type: postgres, dsn: "{DSN}", schema: renamed, table: deals, mode: upsert}}
"""})
    project.env.update(database_env(postgresql_database))
    valid = [trade(i, vendor.config.seed) for i in range(TRADES) if not is_invalid_trade(i, vendor.config.seed)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    kinds = dict(postgresql_database.query(
        "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c "
        "JOIN pg_attribute a ON a.attname = c.column_name AND a.attrelid = 'renamed.deals'::regclass "
        "WHERE table_schema = 'renamed' AND table_name = 'deals'"))
    assert kinds["amount"] == kinds["unit_price"] == "numeric(18,2)"
    assert "notional" not in kinds and "legs" not in kinds
    stored = postgresql_database.query("SELECT deal_id, version, amount FROM renamed.deals")
    assert {(d, v): str(a) for d, v, a in stored} == {(t["trade_id"], t["version"]): _cents(t["notional"])
                                                      for t in valid}
