"""Nothing lost, nothing twice: a failed or killed run resumes with only what is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from etrmflow.testing import EtrmflowProject, SandboxFactory, expected_trades

from . import REPO, TRADES, kill_mid_run, sandbox_project

BEARER = "{type: bearer, token: sandbox-token}"


def test_a_failed_run_resumes_with_only_the_missing_pages(etrmflow_project: EtrmflowProject,
                                                          sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)

    failed = project.run("run", "pipelines/trades.yml")

    assert failed.exit_code == 1, failed.output
    result = project.pipeline_result()
    assert result["counts"]["pages"] == 3
    assert result["missing"].startswith("pages after page 3 (next request: GET /api/v2/trades")
    assert "etrmflow run --resume" in failed.stdout
    vendor.reset()  # fresh counters...
    vendor.set_faults([])  # ...and the vendor has recovered

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    again = project.pipeline_result()
    assert (again["run_id"], again["resumed_from_page"]) == (result["run_id"], 3)
    assert again["counts"]["pages"] == 4 and vendor.stats()["data_requests"] == 4  # pages 4..7 only
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")
    assert not project.path("target/state/trades.json").exists()


def test_a_run_that_starts_over_retires_the_unfinished_runs_checkpoint(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    assert project.run("run", "pipelines/trades.yml").exit_code == 1  # run A: three pages written
    vendor.set_faults(["503:burst=100"])  # run B starts over and fails before its first page

    over = project.run("run", "pipelines/trades.yml")

    assert over.exit_code == 1, over.output
    assert "did not finish; starting over" in over.stderr
    # A's checkpoint went with the start over: a resume must not continue A after page 3 on
    # top of what B discarded (a replace sink's staging, say).
    assert not project.path("target/state/trades.json").exists()
    assert project.pipeline_result()["resumable"] is False
    vendor.reset()
    vendor.set_faults([])

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert "nothing to resume" in resumed.stderr and project.pipeline_result()["resumed_from_page"] is None
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")


def test_resume_refuses_when_a_reference_file_changed_and_continues_when_it_is_back(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    books = "commodity,book\nEL,POWER\nNG,GAS\n"
    project.write({"reference/books.csv": books, "pipelines/trades.yml": (
        "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"
        "transforms:\n  - {type: join, file: reference/books.csv, on: [commodity], columns: [book]}\n"
        "sinks:\n  - {type: sqlite, table: trades}\n")})
    assert project.run("run", "pipelines/trades.yml").exit_code == 1  # three pages loaded with these books
    vendor.set_faults([])
    project.write({"reference/books.csv": books.replace("POWER", "ELECTRICITY")})

    refused = project.run("run", "--resume", "pipelines/trades.yml")

    assert refused.exit_code == 1
    assert "a reference file its steps or validators read" in project.pipeline_result()["error"]
    project.write({"reference/books.csv": books})

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result()["resumed_from_page"] == 3
    assert set(project.query("SELECT DISTINCT book FROM trades")) <= {("POWER",), ("GAS",)}


def test_resume_refuses_a_pipeline_that_changed(etrmflow_project: EtrmflowProject,
                                                sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=2,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    assert project.run("run", "pipelines/trades.yml").exit_code == 1
    connector = project.path("connectors/vendor.yml")
    connector.write_text(connector.read_text().replace("limit: 10", "limit: 20"))

    result = project.run("run", "--resume", "pipelines/trades.yml")

    assert result.exit_code == 1
    assert project.pipeline_result()["error"].startswith("trades changed since run ")
    assert "run it without --resume to start over" in project.pipeline_result()["error"]


def test_resume_without_a_checkpoint_runs_from_the_start(etrmflow_project: EtrmflowProject,
                                                         sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    assert project.run("run", "--resume", "pipelines/trades.yml").exit_code == 0
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")


PIPELINE_WITH_FILES = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}
  - {type: parquet, path: target/parquet/trades}
  - {type: csv, path: target/trades.csv}
"""


def _outputs(root: Path) -> dict[str, object]:
    import sqlite3

    import pyarrow.parquet as pq

    with sqlite3.connect(root / "target/etrmflow.db") as db:
        table = sorted(db.execute("SELECT trade_id, version, price, delivery_start FROM trades").fetchall())
    rows = pq.read_table(root / "target/parquet/trades", columns=["trade_id", "price"]).to_pylist()
    parquet = sorted((r["trade_id"], r["price"]) for r in rows)
    csv_lines = sorted((root / "target/trades.csv").read_text().splitlines()[1:])
    csv_keys = sorted(line.split(",")[0] for line in csv_lines)
    letters = sorted(json.loads(line)["record_sha256"]
                     for line in (root / "target/dead_letter/trades.jsonl").read_text().splitlines())
    return {"sqlite": table, "parquet": parquet, "csv": csv_keys, "dead_letters": letters}


def test_kill_9_mid_run_then_resume_matches_a_clean_run(tmp_path: Path,
                                                        sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["slow:at=5,delay=30"])
    for name in ("killed", "clean"):
        project = EtrmflowProject(tmp_path / name)
        sandbox_project(project, vendor, auth=BEARER)
        project.write({"pipelines/trades.yml": PIPELINE_WITH_FILES})
    env = {**os.environ, "SANDBOX_URL": vendor.base_url, "PYTHONPATH": str(REPO)}
    kill_mid_run(tmp_path / "killed", env)  # page 5 hangs at the vendor
    assert not (tmp_path / "killed/target/parquet/trades").exists()  # nothing published half-way
    vendor.reset()
    vendor.set_faults([])

    killed, clean = EtrmflowProject(tmp_path / "killed"), EtrmflowProject(tmp_path / "clean")
    killed.env["SANDBOX_URL"] = clean.env["SANDBOX_URL"] = vendor.base_url
    resumed = killed.run("run", "--resume", "pipelines/trades.yml")
    assert resumed.exit_code == 0, resumed.output
    assert vendor.stats()["data_requests"] == 3  # pages 5, 6 and 7
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0

    assert _outputs(tmp_path / "killed") == _outputs(tmp_path / "clean")
    assert len(_outputs(tmp_path / "clean")["sqlite"]) == len(expected_trades(vendor.config).valid)
