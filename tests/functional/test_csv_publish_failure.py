"""A CSV output whose publish fails keeps its staged rows: ``run --resume`` publishes them
without fetching anything again, and the file holds exactly the rows of a clean run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etrmflow.testing import EtrmflowProject, SandboxFactory, expected_trades

from . import REPO, TRADES, sandbox_project

BEARER = "{type: bearer, token: sandbox-token}"
CSV_ONLY = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
sinks:
  - {type: csv, path: target/trades.csv}
"""
THREE_SINKS = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}
  - {type: parquet, path: target/parquet/trades}
  - {type: csv, path: target/trades.csv}
"""
RUN_BOUND = ("_etrmflow_run_id", "_etrmflow_loaded_at")
"""Lineage that differs between two runs of the same data; every other cell must be equal."""


def csv_rows(path: Path) -> list[tuple[str, ...]]:
    """The file's rows as text, sorted, without the run-bound lineage columns (header first)."""
    with path.open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    kept = [i for i, name in enumerate(header) if name not in RUN_BOUND]
    return [tuple(header[i] for i in kept), *sorted(tuple(row[i] for i in kept) for row in rows)]


def child_env(vendor_url: str) -> dict[str, str]:
    return {**os.environ, "SANDBOX_URL": vendor_url, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}


def staging_folders(project: EtrmflowProject) -> list[str]:
    return sorted(p.name for p in project.path("target").glob("trades.csv.staging-*"))


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE (a file size limit) is POSIX")
def test_a_disk_that_fills_up_while_the_csv_is_joined_loses_nothing(
        tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    import resource

    vendor = sandbox_vendor_factory(trades=120)
    failed, clean = (sandbox_project(EtrmflowProject(tmp_path / name), vendor, auth=BEARER) for name in ("f", "c"))
    for project in (failed, clean):
        project.write({"pipelines/trades.yml": CSV_ONLY})
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    joined = clean.path("target/trades.csv").stat().st_size
    others = max(p.stat().st_size for p in clean.files("target") if p.name != "trades.csv")
    limit = (others + joined) // 2  # every file of the run fits but the joined CSV: a disk full at publish
    assert others < limit < joined
    vendor.reset()

    def small_disk() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    child = subprocess.run([sys.executable, "-m", "etrmflow", "run", "pipelines/trades.yml"], check=False,
                           cwd=failed.root,
                           env=child_env(vendor.base_url), capture_output=True, text=True, timeout=120,
                           preexec_fn=small_disk)

    assert child.returncode == 1, child.stdout + child.stderr
    result = failed.pipeline_result()
    assert result["error_type"] == "SinkError"
    assert "publishing" in result["error"] and "File too large" in result["error"]
    assert "etrmflow run --resume" in result["error"]
    assert result["missing"] == "no page: every page was fetched; a resumed run only finishes the outputs"
    assert not failed.path("target/trades.csv").exists()
    assert len(staging_folders(failed)) == 1  # the staged rows survive the failed publish
    vendor.reset()

    resumed = failed.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert vendor.stats()["data_requests"] == 0  # nothing fetched again
    assert csv_rows(failed.path("target/trades.csv")) == csv_rows(clean.path("target/trades.csv"))
    assert len(csv_rows(failed.path("target/trades.csv"))) == 1 + len(expected_trades(vendor.config).valid)
    assert staging_folders(failed) == []
    assert not failed.path("target/state/trades.json").exists()


def test_a_folder_at_the_csv_path_fails_the_run_before_any_fetch_and_stays(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": CSV_ONLY, "target/trades.csv/keep.txt": "someone's file\n"})

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    error = project.pipeline_result()["error"]
    assert error.endswith("trades.csv is a folder, and the csv sink writes a file there: remove or rename "
                          "the folder, or set another path")
    assert project.path("target/trades.csv/keep.txt").read_text() == "someone's file\n"
    assert vendor.stats()["data_requests"] == 0 and staging_folders(project) == []


def test_a_resume_whose_staging_folder_is_gone_refuses_instead_of_publishing_less(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": CSV_ONLY})
    assert project.run("run", "pipelines/trades.yml").exit_code == 1  # three pages staged
    [staging] = staging_folders(project)
    shutil.rmtree(project.path("target") / staging)
    vendor.set_faults([])

    refused = project.run("run", "--resume", "pipelines/trades.yml")

    assert refused.exit_code == 1, refused.output
    error = project.pipeline_result()["error"]
    assert f"cannot resume run {staging.rsplit('-', 1)[1]}: its staging folder" in error
    assert "run without --resume to write everything again" in error
    assert not project.path("target/trades.csv").exists()  # no file of pages 4 to 7 only

    again = project.run("run", "pipelines/trades.yml")

    assert again.exit_code == 0, again.output
    assert len(csv_rows(project.path("target/trades.csv"))) == 1 + len(expected_trades(vendor.config).valid)


def test_a_resume_finishes_the_csv_and_keeps_the_parquet_output_its_run_had_published(
        tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    # Page 5 is slow; meanwhile a folder takes the CSV file's place, so the run fetches every
    # page, publishes the Parquet dataset, and then cannot publish the CSV file.
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["slow:at=5,delay=1.5"])
    failed, clean = (sandbox_project(EtrmflowProject(tmp_path / name), vendor, auth=BEARER) for name in ("f", "c"))
    for project in (failed, clean):
        project.write({"pipelines/trades.yml": THREE_SINKS})
    child = subprocess.Popen([sys.executable, "-m", "etrmflow", "run", "pipelines/trades.yml"], cwd=failed.root,
                             env=child_env(vendor.base_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    state = failed.path("target/state/trades.json")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (state.exists() and json.loads(state.read_text())["pages_done"] >= 4):
        time.sleep(0.02)
    failed.write({"target/trades.csv/keep.txt": "someone's file\n"})
    output, _ = child.communicate(timeout=60)

    assert child.returncode == 1, output
    result = failed.pipeline_result()
    assert result["counts"]["pages"] == 7 and "is a folder" in result["error"]
    assert failed.path("target/trades.csv/keep.txt").read_text() == "someone's file\n"
    assert failed.path("target/parquet/trades").is_dir() and len(staging_folders(failed)) == 1
    failed.path("target/trades.csv/keep.txt").unlink()
    failed.path("target/trades.csv").rmdir()
    vendor.reset()
    vendor.set_faults([])

    resumed = failed.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert "the resumed run keeps it as it is" in resumed.stderr  # the Parquet dataset
    assert vendor.stats()["data_requests"] == 0
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    assert csv_rows(failed.path("target/trades.csv")) == csv_rows(clean.path("target/trades.csv"))
    assert outputs(failed) == outputs(clean)
    assert len(outputs(clean)["sqlite"]) == len(expected_trades(vendor.config).valid)
    assert staging_folders(failed) == [] and list(failed.path("target/state").iterdir()) == []


def outputs(project: EtrmflowProject) -> dict[str, list[tuple[object, ...]]]:
    import pyarrow.parquet as pq

    parquet = pq.read_table(project.path("target/parquet/trades")).to_pylist()
    return {"sqlite": sorted(project.query("SELECT trade_id, version, price, delivery_start FROM trades")),
            "parquet": sorted((r["trade_id"], r["version"], r["price"], r["_etrmflow_batch_id"]) for r in parquet)}
