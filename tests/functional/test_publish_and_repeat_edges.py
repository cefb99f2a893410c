"""Edges of the staged-file publish, the repeated-page guard and the resume checks, over real
loopback HTTP with the real CLI: a resumed run must finish what its run started with every record
once, a repeated-page guard must not refuse a legitimate walk, and a refusal must survive
``--resume``. The vendor is a tiny scripted vendor whose pages a test changes between runs."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from etrmflow.testing import (
    Answer,
    EtrmflowProject,
    SandboxFactory,
    ScriptedRequest,
    ScriptedVendor,
)

from . import REPO
from .test_repeated_pages import TinyVendor, _first_trades, _tiny
from .test_writeback import (
    PATH,
    assert_every_valid_settlement_booked_once,
    writeback_project,
)
from .test_writeback_retries import schema_problems

DEAL = """\
name: deal
version: "1"
primary_key: [deal_id, version]
schema:
  type: object
  required: [deal_id, version, price]
  additionalProperties: false
  properties:
    deal_id: {type: string}
    version: {type: integer, minimum: 1}
    price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
"""
TARIFF = """\
name: tariff_hour
version: "1"
schema:
  type: object
  required: [hour, price]
  additionalProperties: false
  properties:
    hour: {type: integer}
    price: {type: number}
"""
CONNECTOR = """\
name: vendor
base_url: "{{ env_var('VENDOR_URL') }}"
auth: {type: none}
defaults:
  retry:
    max_attempts: 2
    backoff: {initial: 0.01s, max: 0.05s, jitter: none}
streams:
  deals:
    path: /deals
    records: $.deals
    paginator: {type: page_number, has_more: $.more}
  ref:
    path: /ref
    records: $.deals
    paginator: {type: page_number, has_more: $.more}
  tariff:
    path: /tariff
    params: {day: "{{ window.start }}"}
    records: $.hours
    paginator: {type: page_number, has_more: $.more}
    windows: {start: 2025-01-01, end: 2025-01-04, step: P1D}
"""


class DealVendor:
    """``/deals?page=n`` answers ``pages[n - 1]``; tests change the pages between runs.
    ``/tariff?day=d&page=n`` answers a fixed tariff: the same hours every day, and nothing in
    the body says which day (the window does). ``/ref`` answers like ``/deals``. ``failing`` holds what is answered 503 until
    removed: (path, page) or ("/tariff", day, page); ``before_page`` runs before a deals page
    is answered."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.ref_pages: list[list[dict[str, Any]]] = []
        """What ``/ref`` answers, if not ``pages``."""
        self.failing: set[tuple[Any, ...]] = set()
        self.before_page: dict[int, Callable[[], None]] = {}
        self.server = ScriptedVendor(self.answer)
        self.url = self.server.url

    @property
    def requests(self) -> list[ScriptedRequest]:
        """Every request it was sent, in order."""
        return self.server.requests

    def close(self) -> None:
        self.server.close()

    def answer(self, request: ScriptedRequest) -> Any:
        path, query = request.path, request.query
        number = int(query.get("page", "1"))
        if {(path, number), (path, query.get("day"), number)} & self.failing:
            return Answer({"error": "unavailable"}, status=503)
        if path == "/tariff":  # two pages of 12 hours a day
            hours = [{"hour": h, "price": 12.5} for h in range(12 * (number - 1), 12 * number)]
            return {"hours": hours, "more": number < 2}
        if number in self.before_page:
            self.before_page[number]()
        pages = self.ref_pages if path == "/ref" and self.ref_pages else self.pages
        return {"deals": pages[number - 1], "more": number < len(pages)}


def deal(number: int, version: int = 1, price: float = 40.45) -> dict[str, Any]:
    return {"deal_id": f"D-{number}", "version": version, "price": price}


@pytest.fixture
def tiny_vendor() -> Iterator[TinyVendor]:
    vendor = TinyVendor()
    yield vendor
    vendor.close()


@pytest.fixture
def deal_vendor() -> Iterator[DealVendor]:
    vendor = DealVendor([[deal(1), deal(2)], [deal(3), deal(4)], [deal(5)]])
    yield vendor
    vendor.close()


def pipeline_yaml(name: str, sinks: str, *, stream: str = "deals", contract: str = "deal",
                  more: str = "") -> str:
    return (f"name: {name}\nsource: {{connector: vendor, stream: {stream}}}\ncontract: {contract}\n"
            f"{more}sinks:\n{sinks}")


def deal_project(project: EtrmflowProject, vendor: DealVendor, sinks: str, more: str = "") -> EtrmflowProject:
    project.write({"contracts/deal.yml": DEAL, "contracts/tariff_hour.yml": TARIFF, "connectors/vendor.yml": CONNECTOR,
                   "pipelines/deals.yml": pipeline_yaml("deals", sinks, more=more)})
    project.env["VENDOR_URL"] = vendor.url
    return project


def csv_deals(path: Path) -> list[tuple[str, str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return sorted((r["deal_id"], r["version"], r["price"]) for r in csv.DictReader(handle))


def parquet_deals(path: Path) -> list[tuple[str, str, str]]:
    import pyarrow.parquet as pq

    return sorted((r["deal_id"], str(r["version"]), f"{r['price']:.2f}") for r in pq.read_table(path).to_pylist())


def state_entries(project: EtrmflowProject) -> list[str]:
    folder = project.path("target/state")
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def staging_folders(project: EtrmflowProject) -> list[str]:
    return sorted(p.name for p in project.path("target").rglob("*.staging-*") if p.parent.name != "state")


def execute(path: Path, *statements: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:  # each statement commits
        for statement in statements:
            db.execute(statement)


ALL_DEALS = [("D-1", "1", "40.45"), ("D-2", "1", "40.45"), ("D-3", "1", "40.45"), ("D-4", "1", "40.45"),
             ("D-5", "1", "40.45")]
AMENDED = [("D-1", "1", "40.45"), ("D-2", "1", "40.45"), ("D-3", "2", "41.00"), ("D-4", "1", "40.45"),
           ("D-5", "1", "40.45")]
"""What the vendor holds once D-3 was amended (version 2, another price) on page 2."""
REFUSE_D3 = ("CREATE TRIGGER refuse BEFORE INSERT ON deals WHEN NEW.deal_id = 'D-3' "
             "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END")


# --- a page staged after the last checkpoint ---------------------------------------------------

@pytest.mark.parametrize("staged", ["csv", "parquet"])
def test_a_page_staged_after_the_last_checkpoint_is_not_published_beside_its_changed_refetch(
        staged: str, deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    """Page 2 is staged by the file sink, then the SQLite sink after it refuses it, so the run
    stops with its checkpoint after page 1. Before the resume the vendor amends D-3 on page 2:
    the page comes again with other content, so under another batch id. The part staged for
    the old page 2 must go, or the file holds D-4 twice and D-3 in a version the vendor no
    longer lists."""
    path = "target/deals.csv" if staged == "csv" else "target/parquet/deals"
    project = deal_project(etrmflow_project, deal_vendor, f"  - {{type: {staged}, path: {path}}}\n"
                                                          "  - {type: sqlite, table: deals, mode: upsert}\n")
    assert project.run("run", "pipelines/deals.yml").exit_code == 0  # creates the table the trigger needs
    execute(project.path("target/etrmflow.db"), REFUSE_D3)
    failed = project.run("run", "pipelines/deals.yml")
    assert failed.exit_code == 1, failed.output
    assert "refused by a trigger" in project.pipeline_result()["error"]
    assert json.loads(project.path("target/state/deals.json").read_text())["pages_done"] == 1
    execute(project.path("target/etrmflow.db"), "DROP TRIGGER refuse")
    deal_vendor.pages[1][0] = deal(3, version=2, price=41.0)

    resumed = project.run("run", "--resume", "pipelines/deals.yml")

    assert resumed.exit_code == 0, resumed.output
    read = csv_deals if staged == "csv" else parquet_deals
    assert read(project.path(path)) == AMENDED
    assert staging_folders(project) == [] and state_entries(project) == []


def test_a_page_staged_after_the_last_checkpoint_and_fetched_unchanged_is_written_once(
        deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n"
                                                          "  - {type: sqlite, table: deals, mode: upsert}\n")
    assert project.run("run", "pipelines/deals.yml").exit_code == 0
    execute(project.path("target/etrmflow.db"), REFUSE_D3)
    assert project.run("run", "pipelines/deals.yml").exit_code == 1
    execute(project.path("target/etrmflow.db"), "DROP TRIGGER refuse")

    resumed = project.run("run", "--resume", "pipelines/deals.yml")

    assert resumed.exit_code == 0, resumed.output
    assert csv_deals(project.path("target/deals.csv")) == ALL_DEALS
    assert project.pipeline_result()["counts"]["pages"] == 2  # pages 2 and 3


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE (a file size limit) is POSIX")
def test_a_disk_that_fills_up_while_a_page_is_staged_fails_the_page_and_the_resume_writes_it_once(
        deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    import resource

    # Page 2 holds a deal with a 300 KB id: its part outgrows the file size limit of the run.
    deal_vendor.pages[1][1] = {"deal_id": "D-4-" + "x" * 300_000, "version": 1, "price": 40.45}
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n")
    limit = 200_000

    def small_disk() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "VENDOR_URL": deal_vendor.url, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.run([sys.executable, "-m", "etrmflow", "run", "pipelines/deals.yml"], check=False,
                           cwd=project.root, env=env, capture_output=True, text=True, timeout=120,
                           preexec_fn=small_disk)

    assert child.returncode == 1, child.stdout + child.stderr
    result = project.pipeline_result()
    assert result["error_type"] == "SinkError" and "File too large" in result["error"], result["error"]
    assert result["counts"]["pages"] == 1 and result["missing"].startswith("pages after page 1 ")
    [staging] = staging_folders(project)
    assert [p.name[:5] for p in project.path("target").joinpath(staging).iterdir()] == ["part-"]  # page 1's

    resumed = project.run("run", "--resume", "pipelines/deals.yml")

    assert resumed.exit_code == 0, resumed.output
    found = csv_deals(project.path("target/deals.csv"))
    assert [d for d, _, _ in found] == ["D-1", "D-2", "D-3", deal_vendor.pages[1][1]["deal_id"], "D-5"]
    assert staging_folders(project) == [] and state_entries(project) == []


# --- a publish that fails, then the next run -------------------------------------------------

def folder_at(path: Path) -> Callable[[], None]:
    """Puts a folder where the CSV file goes: its publish fails (the page is answered after)."""
    def put() -> None:
        (path / "keep.txt").parent.mkdir(parents=True, exist_ok=True)
        (path / "keep.txt").write_text("someone's file\n")
    return put


CSV_AND_PARQUET = ("  - {type: parquet, path: target/parquet/deals}\n"
                   "  - {type: csv, path: target/deals.csv}\n")


@pytest.mark.parametrize("then", ["rerun", "resume_without_checkpoint"])
def test_after_a_failed_csv_publish_a_fresh_run_writes_every_row_once_and_clears_the_old_run(
        then: str, deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    """The Parquet dataset is published (a marker says so), the CSV file is not (a folder is
    in its place). A plain rerun, or a --resume after the checkpoint was deleted, is a new run:
    it publishes both again, each row once, and leaves nothing of the old run behind."""
    project = deal_project(etrmflow_project, deal_vendor, CSV_AND_PARQUET)
    deal_vendor.before_page[3] = folder_at(project.path("target/deals.csv"))
    failed = project.run("run", "pipelines/deals.yml")
    assert failed.exit_code == 1, failed.output
    assert "is a folder" in project.pipeline_result()["error"]
    old_run = project.pipeline_result()["run_id"]
    assert any(name.endswith(".published") for name in state_entries(project))
    assert len(staging_folders(project)) == 1
    shutil.rmtree(project.path("target/deals.csv"))
    del deal_vendor.before_page[3]
    deal_vendor.pages[0][0] = deal(1, version=2, price=39.0)  # the new run must not keep the old output
    if then == "rerun":
        again = project.run("run", "pipelines/deals.yml")
    else:
        project.path("target/state/deals.json").unlink()
        again = project.run("run", "--resume", "pipelines/deals.yml")

    assert again.exit_code == 0, again.output
    assert project.pipeline_result()["run_id"] != old_run and project.pipeline_result()["counts"]["pages"] == 3
    wanted = [("D-1", "2", "39.00"), *ALL_DEALS[1:]]
    assert csv_deals(project.path("target/deals.csv")) == wanted
    assert parquet_deals(project.path("target/parquet/deals")) == wanted
    assert staging_folders(project) == [] and state_entries(project) == []


def test_pipelines_side_by_side_whose_names_share_a_prefix_keep_their_own_staging_and_markers(
        deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    """``deals`` fails to publish its CSV file while ``deals_eu`` (same run id, name with the
    same prefix) succeeds and tidies its state: ``deals``'s staging and marker must survive it,
    and a --resume then publishes its file without fetching anything."""
    project = deal_project(etrmflow_project, deal_vendor, CSV_AND_PARQUET)
    project.write({"pipelines/deals_eu.yml": pipeline_yaml(
        "deals_eu", "  - {type: parquet, path: target/parquet/deals_eu}\n  - {type: csv, path: target/deals_eu.csv}\n")})
    deal_vendor.before_page[3] = folder_at(project.path("target/deals.csv"))

    both = project.run("run", "--threads", "2", "pipelines/deals.yml", "pipelines/deals_eu.yml")

    assert both.exit_code == 1, both.output
    outcome = {p["name"]: p["status"] for p in project.run_results()["pipelines"]}
    assert outcome == {"deals": "failed", "deals_eu": "success"}
    assert csv_deals(project.path("target/deals_eu.csv")) == ALL_DEALS
    assert [name for name in state_entries(project) if name.startswith("deals_eu")] == []
    assert len([name for name in state_entries(project) if name.endswith(".published")]) == 1
    shutil.rmtree(project.path("target/deals.csv"))
    del deal_vendor.before_page[3]
    fetched = len(deal_vendor.requests)

    resumed = project.run("run", "--resume", "pipelines/deals.yml")

    assert resumed.exit_code == 0, resumed.output
    assert len(deal_vendor.requests) == fetched
    assert csv_deals(project.path("target/deals.csv")) == ALL_DEALS
    assert parquet_deals(project.path("target/parquet/deals")) == ALL_DEALS
    assert staging_folders(project) == [] and state_entries(project) == []


# --- no_data before an announced count, across --resume ------------------------------------

@pytest.mark.parametrize("path,records,paginator,refusal", [
    ("/pages", "$.data", "{type: page_number, total_pages: $.total_pages}", "page 4 answered with a no_data"),
    ("/offset", "$.items", "{type: offset, limit: 2, total: $.total}", "offset 6 answered with a no_data"),
], ids=["total_pages", "offset_total"])
def test_a_resumed_walk_still_refuses_a_no_data_answer_before_the_count_its_run_was_told(
        path: str, records: str, paginator: str, refusal: str, tiny_vendor: TinyVendor,
        etrmflow_project: EtrmflowProject) -> None:
    """The vendor announced 10 trades (5 pages) and answers 404 (no_data) from the 4th page on.
    The run refuses to end short; a --resume asks for page 4 first, before any page tells the
    new walk a count: it must refuse the same way, not end with success and 6 trades. Once the
    vendor serves the rest, the resume loads it."""
    tiny_vendor.announced = 10 if path == "/offset" else 5
    project = _tiny(etrmflow_project, tiny_vendor, path, records, paginator)
    first = project.run("run", "pipelines/trades.yml")
    assert first.exit_code == 1, first.output
    assert refusal in project.pipeline_result()["error"]

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 1, resumed.output
    outcome = project.pipeline_result()
    assert outcome["error_type"] == "PaginationError" and refusal in outcome["error"], outcome["error"]
    assert "refusing to end the walk short" in outcome["error"]
    assert "run without --resume to start over" in outcome["error"]
    assert outcome["resumed_from_page"] == 3 and outcome["missing"].startswith("pages after page 3 ")
    tiny_vendor.trades = 10

    served = project.run("run", "--resume", "pipelines/trades.yml")

    assert served.exit_code == 0, served.output
    assert project.query("SELECT trade_id FROM trades") == _first_trades(10)


def test_a_no_data_answer_first_in_a_fresh_walk_with_a_count_is_an_empty_result(
        tiny_vendor: TinyVendor, etrmflow_project: EtrmflowProject) -> None:
    tiny_vendor.trades = 0
    project = _tiny(etrmflow_project, tiny_vendor, "/pages", "$.data",
                    "{type: page_number, total_pages: $.total_pages}")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert project.pipeline_result()["counts"]["fetched"] == 0


# --- the repeated-page guard and date windows ----------------------------------------------

TARIFFS = pipeline_yaml("tariffs", "  - {type: sqlite, table: tariffs, mode: append}\n", stream="tariff",
                        contract="tariff_hour")


def test_date_windows_whose_pages_are_the_same_bytes_each_load(deal_vendor: DealVendor,
                                                               etrmflow_project: EtrmflowProject) -> None:
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n")
    project.write({"pipelines/tariffs.yml": TARIFFS})

    result = project.run("run", "pipelines/tariffs.yml")

    assert result.exit_code == 0, result.output
    assert project.pipeline_result("tariffs")["counts"]["pages"] == 6
    assert project.query("SELECT hour, COUNT(*) FROM tariffs GROUP BY hour") == [(h, 3) for h in range(24)]


def test_a_walk_resumed_mid_window_does_not_take_the_next_windows_first_page_for_a_repeat(
        deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    """Day 2's second page fails for good: the checkpoint remembers day 2's first page, which is
    byte for byte day 3's first page. The resumed walk finishes day 2, then starts day 3: a new
    walk, whose first page is no repeat."""
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n")
    project.write({"pipelines/tariffs.yml": TARIFFS})
    deal_vendor.failing.add(("/tariff", "2025-01-02", 2))
    assert project.run("run", "pipelines/tariffs.yml").exit_code == 1
    state = json.loads(project.path("target/state/tariffs.json").read_text())
    assert (state["window"], state["pages_done"], len(state["recent_pages"])) == (1, 1, 1)
    deal_vendor.failing.clear()

    resumed = project.run("run", "--resume", "pipelines/tariffs.yml")

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result("tariffs")["counts"]["pages"] == 3  # day 2's second page, day 3's two
    assert project.query("SELECT hour, COUNT(*) FROM tariffs GROUP BY hour") == [(h, 3) for h in range(24)]


# --- the resume fingerprint of a reference table -----------------------------------------------

CHECKED = DEAL.replace("schema:", "validators:\n  - {type: reference_data, field: deal_id, database: "
                                  "target/etrmflow.db, table: known_deals, column: deal_id}\nschema:")


@pytest.mark.parametrize("mode", ["replace", "upsert"])
def test_a_reference_table_an_earlier_pipeline_rewrites_with_the_same_rows_lets_the_resume_go_on(
        mode: str, deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    """``known`` loads table known_deals; ``deals`` checks its deal ids against that table and
    fails at page 3. ``etrmflow run --resume`` of both reruns ``known`` (nothing to resume), which
    writes the same rows again under its new run id and load time. The table the check reads
    holds the same deals, so ``deals`` resumes."""
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n")
    project.write({"contracts/deal.yml": CHECKED, "contracts/plain_deal.yml": DEAL.replace("name: deal", "name: plain_deal"),
                   "pipelines/known.yml": pipeline_yaml(
                       "known", f"  - {{type: sqlite, table: known_deals, mode: {mode}}}\n", stream="ref",
                       contract="plain_deal")})
    both = ("pipelines/known.yml", "pipelines/deals.yml")
    deal_vendor.failing.add(("/deals", 3))
    assert project.run("run", *both).exit_code == 1
    assert project.pipeline_result("deals")["counts"]["pages"] == 2
    deal_vendor.failing.clear()

    resumed = project.run("run", "--resume", *both)

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result("deals")["resumed_from_page"] == 2
    assert csv_deals(project.path("target/deals.csv")) == ALL_DEALS


def test_a_reference_table_whose_rows_changed_still_refuses_the_resume(
        deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n")
    project.write({"contracts/deal.yml": CHECKED})
    execute(project.path("target/etrmflow.db"), "CREATE TABLE known_deals (deal_id TEXT, _etrmflow_run_id TEXT)",
            *(f"INSERT INTO known_deals VALUES ('D-{n}', 'a')" for n in range(1, 6)))
    deal_vendor.failing.add(("/deals", 3))
    assert project.run("run", "pipelines/deals.yml").exit_code == 1
    deal_vendor.failing.clear()
    execute(project.path("target/etrmflow.db"), "UPDATE known_deals SET _etrmflow_run_id = 'b'")
    assert project.run("run", "--resume", "pipelines/deals.yml").exit_code == 0  # lineage only: same deals
    deal_vendor.failing.add(("/deals", 3))
    assert project.run("run", "pipelines/deals.yml").exit_code == 1
    deal_vendor.failing.clear()
    execute(project.path("target/etrmflow.db"), "DELETE FROM known_deals WHERE deal_id = 'D-5'")

    refused = project.run("run", "--resume", "pipelines/deals.yml")

    assert refused.exit_code == 1, refused.output
    assert project.pipeline_result()["error_type"] == "ResumeError"


# --- sink retries over several pages, and the resumed run -------------------------------------

def test_sink_retries_of_earlier_pages_count_with_those_of_the_page_that_failed_and_a_resume_counts_its_own(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    # POST 2 answers 503 once (page 1: retried, saved); POSTs 6 to 9 answer 503, so the 6th is
    # tried 4 times (3 retries) and the run fails there, pages later.
    vendor = sandbox_vendor_factory(faults=[f"503:at=2,path={PATH}", f"503:at=6,burst=4,path={PATH}"])
    project = writeback_project(etrmflow_project, vendor)

    failed = project.run("run", "pipelines/instructions.yml")

    assert failed.exit_code == 1, failed.output
    pipeline = project.pipeline_result()
    assert pipeline["counts"]["pages"] >= 1 and pipeline["error_type"] == "SinkError"
    assert (pipeline["counts"]["retries"], pipeline["counts"]["sink_retries"]) == (0, 4)
    assert schema_problems(project.run_results()) == []
    vendor.set_faults([f"503:at=1,path={PATH}"])

    resumed = project.run("run", "--resume", "pipelines/instructions.yml")

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result()["counts"]["sink_retries"] == 1  # this run's, not the interrupted one's
    assert_every_valid_settlement_booked_once(vendor)


def test_a_checkpoint_that_cannot_be_written_fails_the_pipeline_resumable_and_the_others_still_run(
        deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    """As if the disk filled up when page 2's checkpoint is saved (a folder takes the place of
    its temporary file): the pipeline fails with a clear message and run_results.json, instead
    of an "internal error" that also stops the pipelines after it. --resume then writes page 2
    once: its staged part is dropped and fetched again."""
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n")
    project.write({"pipelines/tariffs.yml": TARIFFS})
    blocker = project.path("target/state/deals.json.tmp")

    def block_after_page_one() -> None:  # page 2 is fetched while page 1 may still be committed
        checkpoint = project.path("target/state/deals.json")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not checkpoint.exists():
            time.sleep(0.01)
        blocker.mkdir()
    deal_vendor.before_page[2] = block_after_page_one

    result = project.run("run", "pipelines/deals.yml", "pipelines/tariffs.yml")

    assert result.exit_code == 1, result.output
    deals = project.pipeline_result("deals")
    assert deals["error_type"] == "CheckpointError", deals["error"]
    assert deals["error"].startswith(f"cannot write the checkpoint {project.path('target/state/deals.json')}: ")
    assert "`etrmflow run --resume` continues from there" in deals["error"]
    assert deals["missing"].startswith("pages after page 1 ")
    assert project.pipeline_result("tariffs")["status"] == "success"
    assert schema_problems(project.run_results()) == []
    blocker.rmdir()
    del deal_vendor.before_page[2]

    resumed = project.run("run", "--resume", "pipelines/deals.yml")

    assert resumed.exit_code == 0, resumed.output
    assert csv_deals(project.path("target/deals.csv")) == ALL_DEALS
    assert staging_folders(project) == [] and state_entries(project) == []



def test_two_pipelines_writing_one_csv_path_are_refused_rather_than_one_losing_its_rows(
        deal_vendor: DealVendor, etrmflow_project: EtrmflowProject) -> None:
    project = deal_project(etrmflow_project, deal_vendor, "  - {type: csv, path: target/deals.csv}\n")
    project.write({"pipelines/deals_eu.yml": pipeline_yaml("deals_eu", "  - {type: csv, path: ./target/deals.csv}\n",
                                                           stream="ref")})

    result = project.run("run", "pipelines/deals.yml", "pipelines/deals_eu.yml")

    assert result.exit_code == 2, result.output
    assert "pipelines/deals_eu.yml:" in result.output
    assert "which pipelines/deals.yml sinks[0] (csv) also writes in this run" in result.output
    assert not project.path("target/deals.csv").exists()
