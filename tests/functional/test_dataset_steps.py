"""Whole-dataset steps in real runs: dedupe and vwap over the sandbox's pages into SQLite, a
reconciliation against a CSV file; a rerun writes nothing twice, a failed or killed run resumes
to exactly what a clean run writes."""

from __future__ import annotations

import csv
import decimal
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from etrmflow.sandbox import ThreadedSandbox
from etrmflow.sandbox.data import is_invalid_trade, trade
from etrmflow.testing import EtrmflowProject, SandboxFactory

from . import REPO, TRADES, kill_mid_run, sandbox_project

D = decimal.Decimal
BEARER = "{type: bearer, token: sandbox-token}"
VWAP_PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - {type: dedupe, key: [counterparty_lei], order_by: [updated_at], chunk_rows: 4}
  - {type: vwap, group_by: [product_code, currency], scale: 6, chunk_rows: 3}
  - {type: derive, columns: {average_price: vwap}}
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: vwap, mode: upsert, key: [product_code, currency]}
"""


def valid_trades(vendor: ThreadedSandbox) -> list[dict[str, Any]]:
    """The valid trades the vendor serves, in the order it serves them."""
    seed = vendor.config.seed
    return [trade(i, seed) for i in range(vendor.config.trades) if not is_invalid_trade(i, seed)]


def expected_vwaps(vendor: ThreadedSandbox) -> dict[tuple[str, str], tuple[D, D, int]]:
    """Worked out here with Decimal arithmetic: the latest trade of each counterparty (by
    updated_at; a tie goes to the later one), then per product and currency the VWAP rounded half
    to even to 6 decimals, the total volume and the count."""
    latest: dict[str, dict[str, Any]] = {}
    for record in valid_trades(vendor):
        kept = latest.get(record["counterparty_lei"])
        if kept is None or record["updated_at"] >= kept["updated_at"]:
            latest[record["counterparty_lei"]] = record
    groups: dict[tuple[str, str], list[tuple[D, D]]] = defaultdict(list)
    for record in latest.values():
        price = D(repr(record["price"])).quantize(D("0.01"))
        groups[(record["product_code"], record["currency"])].append((price, D(repr(record["volume_mwh"]))))
    out = {}
    with decimal.localcontext(decimal.Context(prec=100, rounding=decimal.ROUND_HALF_EVEN)):
        for key, rows in groups.items():
            volume = sum(v for _, v in rows)
            vwap = (sum(p * v for p, v in rows) / volume).quantize(D("0.000001"))
            out[key] = (vwap, volume, len(rows))
    return out


def vwap_table(project: EtrmflowProject) -> dict[tuple[str, str], tuple[D, D, int]]:
    rows = project.query("SELECT product_code, currency, vwap, total_volume, trade_count, average_price FROM vwap")
    assert all(row[2] == row[5] for row in rows), "the step after vwap ran on its output"
    assert all(type(row[2]) is type(row[3]) is str for row in rows), "Decimals are stored as exact text"
    return {(p, c): (D(vwap), D(volume), count) for p, c, vwap, volume, count, _ in rows}


def test_dedupe_and_vwap_load_the_worked_out_averages_and_a_rerun_adds_nothing(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": VWAP_PIPELINE})

    first = project.run("run", "pipelines/trades.yml")

    assert first.exit_code == 0, first.output
    expected = expected_vwaps(vendor)
    assert vwap_table(project) == expected
    result = project.pipeline_result()
    valid = len(valid_trades(vendor))
    latest = sum(count for _, _, count in expected.values())
    dedupe = result["steps"]["transforms[0].dedupe"]
    assert (dedupe["rows_in"], dedupe["rows_out"], dedupe["duplicates_dropped"]) == (valid, latest, valid - latest)
    assert latest < valid
    assert result["steps"]["transforms[1].vwap"]["groups"] == len(expected)
    assert result["counts"]["written"] == len(expected)
    schema = json.loads((REPO / "etrmflow/schemas/run_results.schema.json").read_text())
    Draft202012Validator(schema).validate(project.run_results())
    assert list(project.path("target/state").glob("trades.staging-*")) == []  # tidied after success
    batches = set(project.query("SELECT _etrmflow_batch_id FROM vwap"))

    again = project.run("run", "pipelines/trades.yml")

    assert again.exit_code == 0, again.output
    assert vwap_table(project) == expected and project.count("vwap") == len(expected)
    assert set(project.query("SELECT _etrmflow_batch_id FROM vwap")) == batches  # the same batches, upserted


def test_rows_of_a_new_grain_get_a_table_of_their_own_columns_keyed_by_the_group(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": (
        "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"
        "transforms:\n"
        "  - {type: aggregate, group_by: [commodity, currency], measures: {trades: {count: trade_id}}}\n"
        "sinks:\n  - {type: sqlite, table: per_commodity}\n")})  # no key: the group is the key

    results = [project.run("run", "pipelines/trades.yml") for _ in range(2)]

    assert [r.exit_code for r in results] == [0, 0], results[-1].output
    columns = [row[1] for row in project.query("PRAGMA table_info(per_commodity)")]
    assert columns == ["commodity", "currency", "trades", "_etrmflow_run_id", "_etrmflow_batch_id",
                       "_etrmflow_page_sha256", "_etrmflow_loaded_at"]  # no empty trade columns
    keyed = [row[1] for row in project.query("PRAGMA table_info(per_commodity)") if row[5]]
    assert keyed == ["commodity", "currency"]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for record in valid_trades(vendor):
        counts[(record["commodity"], record["currency"])] += 1
    assert {(c, cur): n for c, cur, n in project.query(
        "SELECT commodity, currency, trades FROM per_commodity")} == counts
    assert project.pipeline_result()["sinks"] == {"sqlite target/etrmflow.db table per_commodity "
                                                  "(upsert on commodity, currency)": len(counts)}
    # the dead letters still hold the records as fetched, under the trade contract
    assert {letter["contract"]["name"] for letter in project.dead_letters("trades")} == {"trade"}


def test_a_failed_run_resumes_from_its_staged_rows_to_what_a_clean_run_writes(
        tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    failed = sandbox_project(EtrmflowProject(tmp_path / "failed"), vendor, auth=BEARER)
    failed.write({"pipelines/trades.yml": VWAP_PIPELINE})

    first = failed.run("run", "pipelines/trades.yml")

    assert first.exit_code == 1, first.output
    assert failed.pipeline_result()["counts"]["pages"] == 3
    assert "vwap" not in failed.tables()  # nothing is written before the whole dataset is in
    staged = list(failed.path("target/state").glob("trades.staging-*.db"))
    assert [p.name for p in staged] == [f"trades.staging-{failed.pipeline_result()['run_id']}.db"]
    vendor.reset()
    vendor.set_faults([])

    resumed = failed.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert failed.pipeline_result()["resumed_from_page"] == 3 and vendor.stats()["data_requests"] == 4
    assert vwap_table(failed) == expected_vwaps(vendor)
    assert list(failed.path("target/state").iterdir()) == []  # checkpoint and staging gone
    clean = sandbox_project(EtrmflowProject(tmp_path / "clean"), vendor, auth=BEARER)
    clean.write({"pipelines/trades.yml": VWAP_PIPELINE})
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    assert _table(failed) == _table(clean)


def test_a_fresh_run_after_a_failed_one_starts_over_with_nothing_staged(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": VWAP_PIPELINE})
    assert project.run("run", "pipelines/trades.yml").exit_code == 1
    vendor.reset()
    vendor.set_faults([])

    fresh = project.run("run", "pipelines/trades.yml")  # no --resume: every page again

    assert fresh.exit_code == 0, fresh.output
    assert project.pipeline_result()["steps"]["transforms[0].dedupe"]["rows_in"] == len(valid_trades(vendor))
    assert vwap_table(project) == expected_vwaps(vendor)
    assert list(project.path("target/state").iterdir()) == []


def _table(project: EtrmflowProject) -> list[tuple[Any, ...]]:
    return sorted(project.query("SELECT product_code, currency, vwap, total_volume, trade_count, "
                                "_etrmflow_run_id IS NOT NULL, _etrmflow_batch_id FROM vwap"))


def test_kill_9_mid_run_then_resume_matches_a_clean_run(tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["slow:at=5,delay=30"])
    for name in ("killed", "clean"):
        project = sandbox_project(EtrmflowProject(tmp_path / name), vendor, auth=BEARER)
        project.write({"pipelines/trades.yml": VWAP_PIPELINE})
    env = {**os.environ, "SANDBOX_URL": vendor.base_url, "PYTHONPATH": str(REPO)}
    kill_mid_run(tmp_path / "killed", env)  # page 5 hangs at the vendor
    vendor.reset()
    vendor.set_faults([])
    killed, clean = EtrmflowProject(tmp_path / "killed"), EtrmflowProject(tmp_path / "clean")
    killed.env["SANDBOX_URL"] = clean.env["SANDBOX_URL"] = vendor.base_url

    resumed = killed.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert vendor.stats()["data_requests"] == 3  # pages 5, 6 and 7
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    assert _table(killed) == _table(clean)
    assert vwap_table(killed) == expected_vwaps(vendor)


RECONCILE_PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - type: reconcile
    file: reference/internal.csv
    on: [trade_id]
    compare: {volume_mwh: {abs: 0.5, column: qty_mwh}, price: {abs: 0.01}}
    left_name: broker
    right_name: internal
    chunk_rows: 5
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: breaks, mode: replace, key: [trade_id]}
"""


def test_a_reconciliation_counts_its_breaks_in_the_run_results_and_the_log(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    trades = valid_trades(vendor)
    internal = [{"trade_id": t["trade_id"], "qty_mwh": repr(t["volume_mwh"]), "price": f"{t['price']:.2f}"}
                for t in trades[2:]]  # the internal book lacks the first two trades...
    internal[0]["price"] = str(D(internal[0]["price"]) + D("0.05"))  # ...prices one differently...
    internal[1]["qty_mwh"] = str(D(internal[1]["qty_mwh"]) + D("0.4"))  # ...within tolerance...
    internal.append({"trade_id": "INTERNAL-ONLY-1", "qty_mwh": "1", "price": "1.00"})  # ...and has one more
    project.path("reference").mkdir()
    with project.path("reference/internal.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["trade_id", "qty_mwh", "price"])
        writer.writeheader()
        writer.writerows(internal)
    project.write({"pipelines/trades.yml": RECONCILE_PIPELINE})

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert project.pipeline_result()["steps"]["transforms[0].reconcile"] == {
        "keys": len(trades) + 1, "matched": len(trades) - 3, "breaks": 4,
        "missing_in_internal": 2, "missing_in_broker": 1, "price_mismatch": 1}
    rows = {r["trade_id"]: r for r in project.rows("breaks")}
    assert len(rows) == len(trades) + 1
    assert {k for k, r in rows.items() if r["status"] == "break"} == {
        trades[0]["trade_id"], trades[1]["trade_id"], trades[2]["trade_id"], "INTERNAL-ONLY-1"}
    assert rows[trades[2]["trade_id"]]["reason"] == "price_mismatch"
    assert rows[trades[2]["trade_id"]]["price_diff"] == "-0.05"  # a difference of Decimals: exact text
    assert rows["INTERNAL-ONLY-1"]["reason"] == "missing_in_broker"
    assert (f"reconcile broker vs internal (reference/internal.csv): {len(trades) + 1} key(s), "
            f"{len(trades) - 3} matched, 4 break(s) (missing_in_broker 1, missing_in_internal 2, "
            f"price_mismatch 1)") in result.stderr


def test_dead_letters_are_not_replayed_through_a_whole_dataset_step(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)  # ACME-T-0000013 is quarantined for its LEI
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": VWAP_PIPELINE})
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    letters = project.path("target/dead_letter/trades.jsonl").read_bytes()
    table = _table(project)
    contract = project.path("contracts/trade.yml")
    contract.write_text(contract.read_text().replace("counterparty_lei: {type: string, format: lei}",
                                                     "counterparty_lei: {type: string}"))

    result = project.run("dlq", "replay", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    assert "transforms[0] (dedupe) is a whole-dataset step" in result.output
    assert "rerun the pipeline instead" in result.output
    assert project.path("target/dead_letter/trades.jsonl").read_bytes() == letters  # nothing resolved
    assert _table(project) == table
    assert list(project.path("target/state").glob("trades.staging-*")) == []
