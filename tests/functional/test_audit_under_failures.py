"""The audit log stays one verifiable chain when its writes fail or its writer dies mid-append.

Real failures only: a child process that dies of ``SIGXFSZ`` part-way through an append (a file
size limit with the signal's default action: the kernel writes up to the limit, the next write
kills the process, as a ``kill -9`` would, with no handler and no clean-up), a child whose
appends fail with ``EFBIG`` (the limit with the signal ignored, as Python does: a full disk),
and two pipelines appending side by side (``--threads 2``) while one of them runs out of room.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from etrmflow.audit import AuditLog
from etrmflow.audit.chain import sha256_hex
from etrmflow.errors import disk_problem
from etrmflow.testing import EtrmflowProject

from . import REPO
from .test_disk_full import (
    LIMIT,
    DealVendor,
    Vendors,
    clean_run,
    deal,
    deal_project,
    run_limited,
    small_disk,
    table,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE (a file size limit) is POSIX")

AUDIT = "target/audit/audit.jsonl"
DIES_AT_THE_LIMIT = ("import runpy, signal, sys\n"
                     "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: restore the kill\n"
                     "sys.argv = ['etrmflow', *sys.argv[1:]]\n"
                     "runpy.run_module('etrmflow', run_name='__main__')\n")
"""``etrmflow ARGS``, killed by the kernel on its first write past the file size limit."""


def run_until_killed(project: EtrmflowProject, *args: str, limit: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **{k: v for k, v in project.env.items() if v is not None},
           "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", DIES_AT_THE_LIMIT, *args], check=False, cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=small_disk(limit))


def entries(project: EtrmflowProject) -> list[dict[str, Any]]:
    data = project.path(AUDIT).read_bytes()
    assert data.endswith(b"\n"), "the audit log ends in a cut line"
    return [json.loads(line) for line in data.splitlines()]


def padded_vendor(scripted_vendor: Vendors, *, others: int = 2) -> Any:
    dealer = DealVendor([[deal(n)] for n in range(1, 9)])
    dealer.cursor_padding = 40_000  # each deals page's audit entry names its request: ~40 KB an entry
    dealer.others = [[deal(100 + n)] for n in range(others)]
    return scripted_vendor(dealer)


def test_a_line_cut_by_a_killed_append_survives_a_full_disk_and_is_reported_once_by_the_next_run(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    vendor = padded_vendor(scripted_vendor)
    clean = clean_run(tmp_path, vendor)
    project = deal_project(tmp_path / "crashed", vendor.url)

    killed = run_until_killed(project, "run", "pipelines/deals.yml", limit=LIMIT)

    assert killed.returncode == -signal.SIGXFSZ, killed.stdout + killed.stderr
    crashed = project.path(AUDIT).read_bytes()
    assert len(crashed) == LIMIT and not crashed.endswith(b"\n")  # died mid-append, a cut line at the end
    torn = crashed[crashed.rfind(b"\n") + 1:]

    # The disk is now full: not even the recovery entry fits. The log must stay as it is.
    full = run_limited(project, "run", "--resume", "pipelines/deals.yml", limit=len(crashed) - len(torn) + 100)

    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert project.pipeline_result("deals")["error_type"] == "AuditError"
    assert project.path(AUDIT).read_bytes() == crashed

    resumed = project.run("run", "--resume", "pipelines/deals.yml")

    assert resumed.exit_code == 0, resumed.output
    log = entries(project)
    [recovered] = [entry for entry in log if entry["event"] == "log_recovered"]
    assert (recovered["dropped_bytes"], recovered["dropped_sha256"]) == (len(torn), sha256_hex(torn))
    assert [entry["seq"] for entry in log] == list(range(1, len(log) + 1))
    assert table(project, "deals") == table(clean, "deals") and len(table(project, "deals")) == 8
    processed = {entry["batch_id"] for entry in log if entry["event"] == "page_processed"}
    assert processed >= {entry["batch_id"] for entry in entries(clean) if entry["event"] == "page_processed"}
    verified = project.run("audit", "verify")
    assert verified.exit_code == 0, verified.output

    again = project.run("run", "pipelines/deals.yml")

    assert again.exit_code == 0, again.output
    assert sum(entry["event"] == "log_recovered" for entry in entries(project)) == 1


def test_two_pipelines_appending_side_by_side_keep_one_chain_when_one_runs_out_of_room(
        tmp_path: Path, scripted_vendor: Vendors) -> None:
    vendor = padded_vendor(scripted_vendor, others=12)
    clean = clean_run(tmp_path, vendor)
    project = deal_project(tmp_path / "full", vendor.url)

    child = run_limited(project, "run", "--threads", "2", "pipelines/")

    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert project.pipeline_result("deals")["error_type"] == "AuditError"
    log = entries(project)
    assert [entry["seq"] for entry in log] == list(range(1, len(log) + 1))
    writers = [entry["pipeline"] for entry in log]
    first_deals, last_deals = writers.index("deals"), len(writers) - writers[::-1].index("deals")
    assert "others" in writers[first_deals:last_deals], writers  # the two really appended side by side
    verified = project.run("audit", "verify")
    assert verified.exit_code == 0, verified.output

    resumed = project.run("run", "--resume", "--threads", "2", "pipelines/")

    assert resumed.exit_code == 0, resumed.output
    assert table(project, "deals") == table(clean, "deals") and table(project, "others") == table(clean, "others")
    assert not any(entry["event"] == "log_recovered" for entry in entries(project))
    verified = project.run("audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_an_append_that_fails_before_writing_leaves_a_cut_line_for_the_next_append_to_report(tmp_path: Path) -> None:
    """Not only a failed write: an entry that cannot even be encoded (a plugin's audit fields
    that are not JSON) must not make the cut line of an earlier crash vanish unreported."""
    path = tmp_path / "audit" / "audit.jsonl"
    AuditLog(path).append(run_id="r1", pipeline="deals", events=[("run_started", {"resumed_from_page": None})])
    with path.open("ab") as handle:
        handle.write(b'{"seq":2,"ts":"2025-')  # a crash in the middle of an append
    before = path.read_bytes()

    with pytest.raises(TypeError):
        AuditLog(path).append(run_id="r2", pipeline="deals", events=[("sink_written", {"rows": {1, 2}})])

    assert path.read_bytes() == before
    [entry] = AuditLog(path).append(run_id="r3", pipeline="deals", events=[])
    assert (entry["event"], entry["seq"], entry["dropped_bytes"]) == ("log_recovered", 2, 20)


def test_a_folder_that_already_exists_is_not_called_a_file_in_the_way(tmp_path: Path) -> None:
    """``mkdir`` of a folder that is there (a caller that forgot ``exist_ok``) is a bug to report
    as one, not advice to the user to move away a file that does not exist."""
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError) as there:
        (tmp_path / "out").mkdir()
    assert disk_problem(there.value) is None
    (tmp_path / "taken").write_text("someone's\n")
    with pytest.raises(FileExistsError) as taken:
        (tmp_path / "taken").mkdir(parents=True, exist_ok=True)
    assert disk_problem(taken.value) == ("a file is in the way of a folder on the path", "move the file away")
