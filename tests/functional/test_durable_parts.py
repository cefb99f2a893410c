"""A power cut never loses a page the checkpoint counts: the file sinks' staged parts, their
folders and their journal are on disk before the page's checkpoint is written.

A power cut cannot be simulated here, so the tests check the order the real file system is told
to make things durable. Every ``os.fsync`` of a run is recorded (the real one runs first): the
file or folder it synced (by inode, so a part renamed after its sync is still recognised) and,
for a folder, the names it listed then. When the checkpoint's temporary file is synced (the
checkpoint being written), every file staged so far must already be synced with its current
content, listed under its name by a later sync of its folder, and each folder above it listed
by a sync of its own parent.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from etrmflow.cli.main import write_json
from etrmflow.testing import EtrmflowProject, SandboxFactory, expected_trades

from . import PIPELINE, TRADES, sandbox_project

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="names each synced descriptor's file through /proc (Linux)")

BEARER = "{type: bearer, token: sandbox-token}"
PAGES = 7  # TRADES in pages of 10


@dataclass(frozen=True, slots=True)
class Synced:
    """One completed os.fsync: what the descriptor was, and a folder's entries at that moment."""

    index: int
    path: str
    inode: int
    size: int
    mtime_ns: int
    entries: dict[str, int] | None  # name -> inode; None for a file


class SyncLog:
    """Records every os.fsync, and checks the staged files each time the checkpoint is written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, checkpoint: Path,
                 staged: Callable[[], list[tuple[Path, Path]]]) -> None:
        self.records: list[Synced] = []
        self.checkpoint_temporary = str(checkpoint.with_suffix(".json.tmp").resolve())
        self.staged = staged
        self.checked: list[int] = []
        """Per checkpoint, how many staged files were checked."""
        self.problems: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            real(fd)
            self._record(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def _record(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        info = os.fstat(fd)
        entries = None
        if stat.S_ISDIR(info.st_mode):
            entries = {entry.name: entry.stat(follow_symlinks=False).st_ino for entry in os.scandir(path)}
        self.records.append(Synced(len(self.records), path, info.st_ino, info.st_size, info.st_mtime_ns, entries))
        if path == self.checkpoint_temporary:
            self._check_staged()

    def _check_staged(self) -> None:
        files = self.staged()
        self.checked.append(len(files))
        for file, top in files:
            self.problems.extend(f"checkpoint {len(self.checked)}: {problem}" for problem in self.undurable(file, top))

    def undurable(self, file: Path, top: Path) -> list[str]:
        """What a power cut could take of ``file`` (its content, its name, the names of the
        folders above it up to ``top``), by the syncs recorded so far."""
        info = file.stat()
        synced = [r for r in self.records if r.entries is None and r.inode == info.st_ino]
        if not any((r.size, r.mtime_ns) == (info.st_size, info.st_mtime_ns) for r in synced):
            return [f"{file} was not synced as it is now"]
        problems = []
        # Its name once it had content on disk (a part renamed after its sync; a journal appended to).
        if not self._listed(file, after=synced[0].index):
            problems.append(f"{file} was not listed by a sync of its folder after its content was synced")
        node = file.parent
        while node != top and node != node.parent:
            if not self._listed(node, after=-1):
                problems.append(f"folder {node} was not listed by a sync of its parent")
            node = node.parent
        return problems

    def _listed(self, node: Path, after: int) -> bool:
        inode, folder = node.stat().st_ino, node.parent.stat().st_ino
        return any(r.entries is not None and r.inode == folder and r.entries.get(node.name) == inode
                   and r.index > after for r in self.records)


def staged_files(project: EtrmflowProject, output: Path) -> Callable[[], list[tuple[Path, Path]]]:
    """The files a staged sink of ``output`` wrote so far: its parts (staging folder, checked up
    to the folder it is in) and its journal (in the engine's state folder)."""
    def found() -> list[tuple[Path, Path]]:
        parts = [(file, output.parent) for staging in output.parent.glob(f"{output.name}.staging-*")
                 for file in staging.rglob("*") if file.is_file()]
        state = project.path("target/state")
        journal = [(file, state) for file in state.glob("trades.staging-*.parts/*")]
        return parts + journal
    return found


def run_and_record(project: EtrmflowProject, monkeypatch: pytest.MonkeyPatch, sink: str, output: Path) -> SyncLog:
    project.write({"pipelines/trades.yml": PIPELINE + "sinks:\n  - " + sink + "\n"})
    log = SyncLog(monkeypatch, project.path("target/state/trades.json"), staged_files(project, output))
    result = project.run("run", "pipelines/trades.yml")
    assert result.exit_code == 0, result.output
    return log


def published_files(output: Path) -> list[Path]:
    return [output] if output.is_file() else sorted(p for p in output.rglob("*") if p.is_file())


def trade_ids(output: Path) -> list[str]:
    """The trade ids of the published output, sorted, repeats kept."""
    if output.is_file():
        with output.open(encoding="utf-8", newline="") as handle:
            return sorted(row["trade_id"] for row in csv.DictReader(handle))
    import pyarrow.parquet as pq

    return sorted(pq.read_table(output, columns=["trade_id"]).column("trade_id").to_pylist())


SINKS = {
    "parquet replace": "{type: parquet, path: target/data/out}",
    "parquet append": "{type: parquet, path: target/data/out, mode: append}",
    "parquet append partitioned": "{type: parquet, path: target/data/out, mode: append, partition_by: [product_code]}",
    "parquet replace_partition": "{type: parquet, path: target/data/out, mode: replace_partition, "
                                 "partition_by: [commodity, product_code, buy_sell]}",
    "csv": "{type: csv, path: target/data/out.csv}",
}
"""Sink options by test id. The output, ``target/data/out`` (a folder) or ``target/data/out.csv``,
is alone in its folder: a sync of that folder is the publish's, not another file's."""


def output_of(sink: str) -> str:
    return "target/data/out.csv" if sink == "csv" else "target/data/out"


@pytest.mark.parametrize("sink", SINKS)
def test_every_staged_part_is_on_disk_before_its_pages_checkpoint(
        sink: str, etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    options, output = SINKS[sink], output_of(sink)
    old = project.path(output)  # an output from before: the publish replaces it or adds to it
    if sink == "csv":
        old.parent.mkdir(parents=True)
        old.write_text("trade_id\nOLD-TRADE\n")
    else:
        old.mkdir(parents=True)

    log = run_and_record(project, monkeypatch, options, project.path(output))

    assert log.problems == []
    assert len(log.checked) == PAGES  # one checkpoint a page, each checked
    if "partition" in options:  # a part per partition a page touched
        assert log.checked == sorted(log.checked) and log.checked[-1] > PAGES
    else:  # the parts of the pages so far, and from page 2 on the journal (page 1 had no checkpoint before it)
        assert log.checked == [1, *(page + 1 for page in range(2, PAGES + 1))]
    # What was published is as durable: each file's content, its name, its folders.
    files = published_files(project.path(output))
    assert files
    assert [problem for file in files for problem in log.undurable(file, project.path("target/data"))] == []
    assert log.undurable(project.path("target/run_results.json"), project.path("target")) == []
    # The marker that tells a resumed run this output is published was on disk before the staging went.
    assert any(r.entries for r in log.records if r.path.endswith(".published"))
    assert trade_ids(project.path(output)) == sorted(expected_trades(vendor.config).valid)  # each once


def test_a_resumed_run_stages_as_durably_as_the_interrupted_one(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    options, output = SINKS["parquet replace_partition"], output_of("parquet replace_partition")
    project.write({"pipelines/trades.yml": PIPELINE + "sinks:\n  - " + options + "\n"})
    log = SyncLog(monkeypatch, project.path("target/state/trades.json"), staged_files(project, project.path(output)))
    assert project.run("run", "pipelines/trades.yml").exit_code == 1  # three pages staged
    vendor.reset()
    vendor.set_faults([])

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result()["resumed_from_page"] == 3
    assert log.problems == []
    assert len(log.checked) == PAGES
    assert trade_ids(project.path(output)) == sorted(expected_trades(vendor.config).valid)


def test_write_json_syncs_the_file_before_renaming_it_and_the_folder_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "target" / "run_results.json"
    path.parent.mkdir()
    path.write_text("{}\n")
    log = SyncLog(monkeypatch, tmp_path / "no-checkpoint.json", list)

    write_json(path, {"status": "success", "pipelines": []})

    assert json.loads(path.read_text()) == {"status": "success", "pipelines": []}
    data = [r for r in log.records if r.entries is None]
    assert [Path(r.path).name for r in data] == ["run_results.json.tmp"]  # synced under its temporary name
    assert data[0].inode == path.stat().st_ino and data[0].size == path.stat().st_size
    assert log.undurable(path, path.parent) == []  # and listed by a sync of the folder after the rename


def test_the_checkpoint_a_failed_run_leaves_is_synced_and_listed_by_its_folder(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    checkpoint = project.path("target/state/trades.json")
    log = SyncLog(monkeypatch, checkpoint, list)

    assert project.run("run", "pipelines/trades.yml").exit_code == 1  # three pages done, then the vendor fails

    assert json.loads(checkpoint.read_text())["pages_done"] == 3
    # Its content under its temporary name, its name after the rename, and the state folder itself.
    assert log.undurable(checkpoint, project.path("target")) == []
