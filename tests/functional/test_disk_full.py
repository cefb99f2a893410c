"""A full disk or an unwritable target never crashes a run and never loses a record.

Every writer of a run is driven into a real failure: a disk that fills up is a file size limit
(``RLIMIT_FSIZE``) on a real ``etrmflow`` child process, a limit that holds for root too (a
write past it fails with ``EFBIG``, "File too large", as a full disk fails with ``ENOSPC``); an
unwritable target is a file or a folder where etrmflow's goes. The vendor is a loopback HTTP
server whose pages a test shapes so that the writer under test is the one that runs out of
room: a quarantined record with a long note (a dead letter), a long cursor (each page's audit
entry names its request), a long padding beside the records (a kept body).

Each failure must fail its pipeline (exit 1) with a message that names the file, the OS error
and how to recover; the run's other pipelines still run; and ``run --resume``, once the cause
is gone, ends with exactly the rows and dead letters of a clean run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etrmflow.audit import AuditLog
from etrmflow.errors import write_failure
from etrmflow.testing import EtrmflowProject, ScriptedRequest, ScriptedVendor

from . import REPO

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE (a file size limit) is POSIX")

LIMIT = 200_000
"""The largest file a limited run may write, in bytes."""
BIG = 300_000
"""A value that cannot fit under ``LIMIT``."""

DEAL = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, version, price]
  additionalProperties: false
  properties:
    deal_id: {type: string}
    version: {type: integer, minimum: 1}
    price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
    note: {type: string}
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
    paginator: {type: cursor, cursor: $.next, param: cursor}
  others:
    path: /others
    records: $.deals
    paginator: {type: cursor, cursor: $.next, param: cursor}
"""
DEALS = "name: deals\nsource: {{connector: vendor, stream: deals}}\ncontract: deal\n" \
        "sinks:\n  - {{type: sqlite, path: {database}, table: deals, mode: upsert}}\ndead_letter: {letters}\n"
LETTERS = {"jsonl": "{type: jsonl}", "sqlite": "{type: sqlite, path: target/letters.db}"}
"""The deals pipeline's dead-letter sink, by kind: the default JSON Lines file, or a table."""
OTHERS = ("name: others\nsource: {connector: vendor, stream: others}\ncontract: deal\n"
          "sinks:\n  - {type: sqlite, table: others, mode: upsert}\n")
"""A second pipeline of the run, whose pages are small: it must still run."""
RUN_BOUND = {"_etrmflow_run_id", "_etrmflow_loaded_at", "run_id", "quarantined_at", "id"}
"""What differs between two runs of the same data; everything else must be equal."""


def deal(number: int, *, version: int = 1, note: str | None = None) -> dict[str, Any]:
    found = {"deal_id": f"D-{number}", "version": version, "price": 40.45 + number}
    return found if note is None else {**found, "note": note}


def three_pages() -> list[list[dict[str, Any]]]:
    """Six deals, two of them invalid (version 0): one on page 2, one on page 3."""
    return [[deal(1), deal(2)], [deal(3), deal(4, version=0)], [deal(5), deal(6, version=0)]]


class DealVendor:
    """``/deals`` walks ``pages`` by cursor, ``/others`` walks two small pages. In ``/deals``,
    ``cursor_padding`` makes every cursor that long, and ``padded`` (page number: bytes) adds
    that many bytes beside a page's records."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.others = [[deal(100), deal(101)], [deal(102)]]
        self.cursor_padding = 0
        self.padded: dict[int, int] = {}

    def __call__(self, request: ScriptedRequest) -> dict[str, Any]:
        deals = request.path == "/deals"
        pages = self.pages if deals else self.others
        number = int(request.query.get("cursor", "1").split("-")[0])
        padding = self.cursor_padding if deals else 0
        following = f"{number + 1}-" + "c" * padding if number < len(pages) else None
        body: dict[str, Any] = {"deals": pages[number - 1], "next": following}
        if deals and number in self.padded:
            body["padding"] = "p" * self.padded[number]
        return body


Vendors = Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]


def deal_project(root: Path, url: str, *, letters: str = "jsonl",
                 database: str = "target/etrmflow.db") -> EtrmflowProject:
    """Pipelines ``deals`` (SQLite table ``deals`` in ``database``, dead letters as ``letters``)
    and ``others`` (table ``others`` in target/etrmflow.db)."""
    root.mkdir(parents=True, exist_ok=True)
    project = EtrmflowProject(root)
    project.write({"etrmflow.yml": "name: disk_full\n", "contracts/deal.yml": DEAL, "connectors/vendor.yml": CONNECTOR,
                   "pipelines/deals.yml": DEALS.format(database=database, letters=LETTERS[letters]),
                   "pipelines/others.yml": OTHERS})
    project.env["VENDOR_URL"] = url
    return project


def small_disk(limit: int) -> Callable[[], None]:
    """For ``preexec_fn``: the child cannot write a file past ``limit`` bytes (Python ignores
    SIGXFSZ, so such a write fails with EFBIG instead of killing the child)."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limited


def run_limited(project: EtrmflowProject, *args: str, limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    """``etrmflow ARGS`` as a child process that cannot write a file past ``limit`` bytes."""
    env = {**os.environ, **{k: v for k, v in project.env.items() if v is not None},
           "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "etrmflow", *args], check=False, cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=small_disk(limit))


def table(project: EtrmflowProject, name: str, database: str | None = None) -> list[tuple[Any, ...]]:
    rows = project.rows(name, database=database)
    return sorted(tuple(sorted((k, v) for k, v in row.items() if k not in RUN_BOUND)) for row in rows)


def jsonl_letters(project: EtrmflowProject) -> list[dict[str, Any]]:
    """Every line of the dead-letter file, parsed (a torn line fails the test)."""
    path = project.path("target/dead_letter/deals.jsonl")
    lines = path.read_bytes().split(b"\n") if path.exists() else [b""]
    assert lines[-1] == b"", "the dead-letter file ends in a cut line"
    return sorted(({k: v for k, v in json.loads(line).items() if k not in RUN_BOUND} for line in lines[:-1]),
                  key=lambda letter: letter["record"]["deal_id"])


def sqlite_letters(project: EtrmflowProject) -> list[tuple[Any, ...]]:
    return table(project, "dead_letters", "target/letters.db")


def assert_as_clean(project: EtrmflowProject, clean: EtrmflowProject, *, letters: str = "jsonl",
                    database: str = "target/etrmflow.db") -> None:
    """The project holds what the clean run holds: rows, dead letters (D-4 and D-6, once each);
    and its audit log verifies."""
    assert table(project, "deals", database) == table(clean, "deals")
    assert table(project, "others") == table(clean, "others")
    if letters == "jsonl":
        assert jsonl_letters(project) == jsonl_letters(clean)
        assert [letter["record"]["deal_id"] for letter in jsonl_letters(project)] == ["D-4", "D-6"]
    else:
        assert sqlite_letters(project) == sqlite_letters(clean)
        assert sorted(json.loads(dict(row)["record"])["deal_id"] for row in sqlite_letters(project)) == ["D-4", "D-6"]
    verified = project.run("audit", "verify")
    assert verified.exit_code == 0, verified.output


def clean_run(tmp_path: Path, vendor: ScriptedVendor, letters: str = "jsonl") -> EtrmflowProject:
    clean = deal_project(tmp_path / "clean", vendor.url, letters=letters)
    result = clean.run("run", "pipelines/")
    assert result.exit_code == 0, result.output
    return clean


def assert_failed_resumable(project: EtrmflowProject, child: subprocess.CompletedProcess[str],
                            error_type: str, *needles: str) -> dict[str, Any]:
    assert child.returncode == 1, child.stdout + child.stderr
    assert "Traceback" not in child.stderr and "Internal error" not in child.stderr, child.stderr
    deals = project.pipeline_result("deals")
    assert deals["status"] == "failed" and deals["error_type"] == error_type, deals
    for needle in needles:
        assert needle in deals["error"], deals["error"]
    assert "etrmflow run --resume" in deals["error"], deals["error"]
    assert project.pipeline_result("others")["status"] == "success"
    assert project.path("target/state/deals.json").exists()
    return deals


# --- dead letters -----------------------------------------------------------------------------

def test_a_dead_letter_that_does_not_fit_fails_its_page_before_the_valid_records_and_resume_stores_both(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    pages = three_pages()
    pages[1][1] = deal(4, version=0, note="n" * BIG)  # its letter cannot be appended
    vendor = scripted_vendor(DealVendor(pages))
    clean = clean_run(tmp_path, vendor)
    project = deal_project(tmp_path / "full", vendor.url)

    child = run_limited(project, "run", "pipelines/")

    dead_letters = str(project.path("target/dead_letter/deals.jsonl"))
    deals = assert_failed_resumable(project, child, "SinkError", dead_letters, "File too large")
    assert deals["missing"].startswith("pages after page 1 ")
    assert [row["deal_id"] for row in project.rows("deals")] == ["D-1", "D-2"]  # not D-3: its page failed
    assert jsonl_letters(project) == []

    resumed = project.run("run", "--resume", "pipelines/")

    assert resumed.exit_code == 0, resumed.output
    assert_as_clean(project, clean)


def test_a_dead_letter_the_sqlite_table_cannot_take_fails_its_page_and_resume_stores_both(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    pages = three_pages()
    pages[1][1] = deal(4, version=0, note="n" * BIG)
    vendor = scripted_vendor(DealVendor(pages))
    clean = clean_run(tmp_path, vendor, letters="sqlite")
    project = deal_project(tmp_path / "full", vendor.url, letters="sqlite")

    child = run_limited(project, "run", "pipelines/")

    assert_failed_resumable(project, child, "SinkError", str(project.path("target/letters.db")),
                            "disk I/O error (a write to the disk failed: a full disk")
    assert [row["deal_id"] for row in project.rows("deals")] == ["D-1", "D-2"]
    assert sqlite_letters(project) == []

    resumed = project.run("run", "--resume", "pipelines/")

    assert resumed.exit_code == 0, resumed.output
    assert_as_clean(project, clean, letters="sqlite")


# --- the SQLite sink --------------------------------------------------------------------------

def test_a_batch_the_sqlite_table_cannot_take_fails_its_page_and_resume_writes_it(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    pages = three_pages()
    pages[1][0] = deal(3, note="n" * BIG)  # a valid record too large for the database's journal
    vendor = scripted_vendor(DealVendor(pages))
    clean = clean_run(tmp_path, vendor)
    project = deal_project(tmp_path / "full", vendor.url)

    child = run_limited(project, "run", "pipelines/")

    assert_failed_resumable(project, child, "SinkError", str(project.path("target/etrmflow.db")),
                            "disk I/O error (a write to the disk failed: a full disk")

    resumed = project.run("run", "--resume", "pipelines/")

    assert resumed.exit_code == 0, resumed.output
    assert_as_clean(project, clean)


# --- the audit log ----------------------------------------------------------------------------

def test_an_audit_log_that_cannot_grow_fails_the_pipeline_and_leaves_no_cut_entry(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    dealer = DealVendor([[deal(n)] for n in range(1, 9)])
    dealer.cursor_padding = 40_000  # each page's audit entry names its request: ~40 KB an entry
    vendor = scripted_vendor(dealer)
    clean = clean_run(tmp_path, vendor)
    project = deal_project(tmp_path / "full", vendor.url)

    child = run_limited(project, "run", "pipelines/")

    assert_failed_resumable(project, child, "AuditError", str(project.path("target/audit/audit.jsonl")),
                            "File too large")
    log = project.path("target/audit/audit.jsonl").read_bytes()
    assert log.endswith(b"\n") and len(log) <= LIMIT
    assert project.run("audit", "verify").exit_code == 0

    resumed = project.run("run", "--resume", "pipelines/")

    assert resumed.exit_code == 0, resumed.output
    assert table(project, "deals") == table(clean, "deals") and len(table(project, "deals")) == 8
    assert table(project, "others") == table(clean, "others")
    verified = project.run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert b"log_recovered" not in project.path("target/audit/audit.jsonl").read_bytes()


def test_an_append_that_does_not_fit_leaves_the_audit_log_byte_for_byte_as_it_was(tmp_path: Path) -> None:
    """Also when the log ended in an entry a crash cut short: the append removes it first (to
    chain to the last whole entry), so a failed append puts it back, and the next append still
    reports it in a ``log_recovered`` entry."""
    path = tmp_path / "audit" / "audit.jsonl"
    AuditLog(path).append(run_id="r1", pipeline="deals", events=[("run_started", {"resumed_from_page": None})])
    with path.open("ab") as handle:
        handle.write(b'{"seq":2,"ts":"2025-')  # a crash in the middle of an append
    before = path.read_bytes()
    append = ("import sys; from pathlib import Path; from etrmflow.audit import AuditLog, AuditError\n"
              "try:\n"
              f"    AuditLog(Path({str(path)!r})).append(run_id='r2', pipeline='deals', "
              "events=[('page_fetched', {'url': 'u' * 5000})])\n"
              "except AuditError as exc:\n"
              "    sys.exit(str(exc))\n")
    limit = len(before) + 1000

    child = subprocess.run([sys.executable, "-c", append], check=False, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
                           preexec_fn=small_disk(limit))

    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert child.stderr.startswith(f"cannot append to the audit log {path} (it is left as it was"), child.stderr
    assert path.read_bytes() == before
    [entry] = AuditLog(path).append(run_id="r3", pipeline="deals", events=[])
    assert (entry["event"], entry["seq"]) == ("log_recovered", 2)
    assert entry["dropped_bytes"] == len(b'{"seq":2,"ts":"2025-')


# --- kept bodies ------------------------------------------------------------------------------

def test_a_body_that_cannot_be_kept_fails_the_pipeline_before_its_page_is_written(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    dealer = DealVendor(three_pages())
    dealer.padded[2] = BIG  # page 2's body is larger than any file may be; its records are small
    vendor = scripted_vendor(dealer)
    clean = clean_run(tmp_path, vendor)  # keeps no body
    project = deal_project(tmp_path / "full", vendor.url)

    child = run_limited(project, "run", "--keep-bodies", "pipelines/")

    deals = assert_failed_resumable(project, child, "AuditError", str(project.path("target/bodies/sha256/")),
                                    "File too large")
    assert deals["counts"]["pages"] == 1 and deals["missing"].startswith("pages after page 1 ")
    assert [row["deal_id"] for row in project.rows("deals")] == ["D-1", "D-2"]
    kept = [p for p in project.files("target/bodies")]
    assert len(kept) == 3 and not any(p.name.startswith(".tmp") for p in kept)  # deals page 1, others' 2

    resumed = project.run("run", "--resume", "--keep-bodies", "pipelines/")

    assert resumed.exit_code == 0, resumed.output
    assert_as_clean(project, clean)


# --- artifacts: plan.json and run_results.json ------------------------------------------------

def test_run_results_that_do_not_fit_fail_the_command_and_keep_the_last_complete_file(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    """Each pipeline gets a record with a field the contract does not know, named with 120 KB:
    its dead letter fits, but run_results.json, which counts the drift of both, does not."""
    dealer = DealVendor(three_pages())
    dealer.pages[2][1] = {**deal(6), "x" * 120_000: 1}
    dealer.others[1] = [{**deal(102), "y" * 120_000: 1}]
    vendor = scripted_vendor(dealer)
    project = deal_project(tmp_path / "full", vendor.url)
    project.write({"target/run_results.json": "{}\n"})  # an earlier run's

    child = run_limited(project, "run", "pipelines/")

    assert child.returncode == 1, child.stdout + child.stderr
    assert "Traceback" not in child.stderr and "Internal error" not in child.stderr, child.stderr
    path = project.path("target/run_results.json")
    assert f"Error: cannot write {path}: [Errno 27] File too large (disk full for this file" in child.stderr
    assert "OK   deals: pages 3, fetched 6, valid 4, quarantined 2" in child.stdout  # what the run did, still shown
    assert "then run the command again (`etrmflow run --resume` continues" in child.stderr
    assert project.read_json("target/run_results.json") == {}
    assert not project.path("target/run_results.json.tmp").exists()
    assert [row["deal_id"] for row in project.rows("deals")] == ["D-1", "D-2", "D-3", "D-5"]
    assert [letter["record"]["deal_id"] for letter in jsonl_letters(project)] == ["D-4", "D-6"]
    assert project.path("target/state").exists() and list(project.path("target/state").iterdir()) == []


@pytest.mark.parametrize("artifact", ["plan.json", "run_results.json"])
def test_an_artifact_whose_path_is_taken_by_a_folder_fails_the_command_rather_than_crash(
        artifact: str, tmp_path: Path, scripted_vendor: Vendors) -> None:
    vendor = scripted_vendor(DealVendor(three_pages()))
    project = deal_project(tmp_path / "full", vendor.url)
    project.path(f"target/{artifact}.tmp").mkdir(parents=True)  # a folder where its temporary file goes

    result = project.run("run", "pipelines/")

    assert result.exit_code == 1, result.output
    assert "Internal error" not in result.output and not project.path("target/crash.log").exists()
    assert (f"Error: cannot write {project.path('target/' + artifact)}: [Errno 21] Is a directory: "
            in result.stderr), result.stderr
    assert "(a folder is in the way of the file); move the folder away, then run the command again" in result.stderr
    assert project.path(f"target/{artifact}.tmp").is_dir()  # someone's folder: left alone
    fetched = artifact == "run_results.json"  # plan.json is written before anything is fetched
    assert ("deals" in project.tables()) is fetched


# --- unwritable targets -----------------------------------------------------------------------

BLOCKED = {  # what is in the way: (the deals pipeline's letters and database, the path, what it says)
    "a folder where the dead-letter file goes": ("jsonl", "target/etrmflow.db", "target/dead_letter/deals.jsonl",
                                                 "folder", "a folder is in the way of the file"),
    "a file where the database's folder goes": ("jsonl", "target/deals/etrmflow.db", "target/deals", "file",
                                                "a file is in the way of a folder on the path"),
    "a folder where the dead-letter database goes": ("sqlite", "target/etrmflow.db", "target/letters.db", "folder",
                                                     "the database file cannot be created or opened there"),
    "a folder where the database goes": ("jsonl", "target/deals.db", "target/deals.db", "folder",
                                         "the database file cannot be created or opened there"),
}


@pytest.mark.parametrize("case", list(BLOCKED))
def test_a_path_taken_by_a_file_or_folder_fails_its_pipeline_only_and_resume_loads_all(
        case: str, tmp_path: Path, scripted_vendor: Vendors) -> None:
    letters, database, blocked, kind, meaning = BLOCKED[case]
    vendor = scripted_vendor(DealVendor(three_pages()))
    clean = clean_run(tmp_path, vendor, letters=letters)
    project = deal_project(tmp_path / "full", vendor.url, letters=letters, database=database)
    project.path(blocked).mkdir(parents=True) if kind == "folder" else project.write({blocked: "someone's\n"})

    result = project.run("run", "pipelines/")

    assert result.exit_code == 1, result.output
    assert "Internal error" not in result.output and not project.path("target/crash.log").exists()
    deals = project.pipeline_result("deals")
    assert deals["error_type"] == "SinkError" and deals["counts"]["pages"] == 0, deals
    assert str(project.path(blocked)) in deals["error"] and meaning in deals["error"], deals["error"]
    assert project.pipeline_result("others")["status"] == "success"
    (project.path(blocked).rmdir if kind == "folder" else project.path(blocked).unlink)()

    resumed = project.run("run", "--resume", "pipelines/")

    assert resumed.exit_code == 0, resumed.output
    assert_as_clean(project, clean, letters=letters, database=database)


def test_a_sink_that_lets_an_os_error_of_a_full_or_blocked_path_through_fails_only_its_pipeline(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    """The engine's last line for sinks and plugins that do not say what failed themselves: a
    Parquet folder whose parent is a file."""
    vendor = scripted_vendor(DealVendor(three_pages()))
    project = deal_project(tmp_path / "full", vendor.url)
    project.write({"pipelines/deals.yml": "name: deals\nsource: {connector: vendor, stream: deals}\ncontract: deal\n"
                                          "sinks:\n  - {type: parquet, path: target/parquet/deals}\n",
                   "target/parquet": "someone's\n"})

    result = project.run("run", "pipelines/")

    assert result.exit_code == 1, result.output
    assert not project.path("target/crash.log").exists()
    deals = project.pipeline_result("deals")
    assert deals["error_type"] == "StorageError", deals
    assert str(project.path("target/parquet")) in deals["error"]
    assert "(a file is in the way of a folder on the path); move the file away, then" in deals["error"]
    assert project.pipeline_result("others")["status"] == "success"


# --- what the messages say about the system's own errors ---------------------------------------

def test_a_full_disk_is_named_as_such_for_the_errors_the_system_and_sqlite_raise(tmp_path: Path) -> None:
    with pytest.raises(OSError) as full, open("/dev/full", "wb", buffering=0) as device:  # ENOSPC, for real
        device.write(b"settlement")
    assert write_failure(full.value).startswith("[Errno 28] No space left on device (the disk is full); "
                                                "free space on it, then `etrmflow run --resume` continues")
    with contextlib.closing(sqlite3.connect(tmp_path / "small.db")) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.execute("PRAGMA max_page_count = 2")  # SQLite's own "disk" is two pages
        with pytest.raises(sqlite3.OperationalError) as sqlite_full:
            db.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    assert write_failure(sqlite_full.value).startswith("database or disk is full (the disk is full); free space")
    assert write_failure(ValueError("not a number")) == "not a number"  # no disk in it: no advice


def test_a_failed_page_whose_audit_entries_cannot_be_written_either_reports_its_own_failure(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    project = deal_project(tmp_path / "project", "")
    project.write({"pipelines/deals.yml": DEALS.format(database="target/etrmflow.db", letters=LETTERS["jsonl"])
                   + "on_invalid: {action: fail}\n"})
    pages = DealVendor([[deal(1), deal(2, version=0)], [deal(3)]])
    audit_log = project.path("target/audit/audit.jsonl")

    def answer(request: ScriptedRequest) -> dict[str, Any]:
        if request.path == "/deals" and "cursor" not in request.query:  # after run_started, before page 1
            audit_log.rename(audit_log.with_name("aside.jsonl"))
            audit_log.mkdir()  # page 1 fails on its invalid record; its audit entries cannot land
        return pages(request)

    project.env["VENDOR_URL"] = scripted_vendor(answer).url

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert "page 0 has 1 invalid record(s) and on_invalid.action is fail" in result.output
    assert "could not be written either" in result.output
