"""The table of broken projects: each case file is a project, a command and the exact stderr.

A case (``tests/cases/config_errors/*.yml``)::

    description: unknown key in a stream, with a did-you-mean hint
    base: minimal                  # start from _base/minimal/ (the default); `none` for an empty folder
    command: [validate, pipelines/trades.yml]    # arguments after `etrmflow`
    env: {VENDOR_TOKEN: null}      # optional; null unsets a variable
    files:                         # optional; replaces (or adds) whole files; null deletes one
      connectors/vendor.yml: |
        ...
    exit_code: 2
    stderr: |                      # the exact output, every line
      connectors/vendor.yml:7:5: streams.trades.pagniator: unknown key 'pagniator' (did you mean 'paginator'?)
      1 problem found; nothing was fetched.
    stdout: ""                     # optional; empty unless given

The CLI runs in-process in a temporary copy of the project. ``TRIPWIRE_URL`` in any file becomes
the address of a loopback socket that nothing may connect to, so a case also proves that nothing
was fetched; no case may leave run results or a crash log behind.
"""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from etrmflow.cli.main import run_cli

CASES = Path(__file__).parent / "cases" / "config_errors"
BASES = CASES / "_base"
CASE_KEYS = {"description", "base", "command", "env", "files", "exit_code", "stderr", "stdout"}
REQUIRED_KEYS = {"description", "command", "exit_code", "stderr"}


def case_files() -> list[Path]:
    return sorted(CASES.glob("*.yml"))


def read_case(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


class Tripwire:
    """A listening loopback socket: any connection attempt to it is a fetch that must not happen."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def was_contacted(self) -> bool:
        try:
            connection, _ = self.socket.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.socket.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI installs its own handlers on the etrmflow logger; put the old ones back."""
    logger = logging.getLogger("etrmflow")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def build_project(case: dict[str, Any], root: Path, tripwire_url: str) -> None:
    base = case.get("base", "minimal")
    if base != "none":
        shutil.copytree(BASES / base, root, dirs_exist_ok=True)
    for relative, text in (case.get("files") or {}).items():
        path = root / relative
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for path in root.rglob("*.y*ml"):
        path.write_text(path.read_text(encoding="utf-8").replace("TRIPWIRE_URL", tripwire_url), encoding="utf-8")


@pytest.mark.parametrize("case_file", case_files(), ids=lambda path: path.stem)
def test_config_error_case(case_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str], tripwire: Tripwire, restore_logging: None) -> None:
    case = read_case(case_file)
    build_project(case, tmp_path, tripwire.url)
    for name, value in (case.get("env") or {}).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tmp_path)

    exit_code = run_cli([str(arg) for arg in case["command"]])

    captured = capsys.readouterr()
    assert (exit_code, captured.err) == (case["exit_code"], case["stderr"]), captured.err
    assert captured.out == case.get("stdout", "")
    assert not tripwire.was_contacted(), "a config error must stop the run before anything is fetched"
    assert not (tmp_path / "target" / "run_results.json").exists()
    assert not (tmp_path / "target" / "crash.log").exists()


@pytest.mark.parametrize("case_file", case_files(), ids=lambda path: path.stem)
def test_case_file_is_complete(case_file: Path) -> None:
    case = read_case(case_file)
    assert set(case) <= CASE_KEYS, f"unknown keys in the case file: {sorted(set(case) - CASE_KEYS)}"
    assert REQUIRED_KEYS <= set(case), f"missing: {sorted(REQUIRED_KEYS - set(case))}"
    assert isinstance(case["description"], str) and len(case["description"].split()) >= 3
    assert isinstance(case["command"], list) and case["command"]
    assert isinstance(case["stderr"], str) and case["stderr"].endswith("\n")
    assert case.get("base", "minimal") == "none" or (BASES / case.get("base", "minimal")).is_dir()
    if case["exit_code"] == 2 and not case["stderr"].startswith(("Usage:", "Error:")):
        count = len([line for line in case["stderr"].splitlines() if line and not line.startswith(" ")]) - 1
        summary = f"{count} problem{'s' if count != 1 else ''} found; nothing was fetched.\n"
        assert case["stderr"].endswith(summary), "the last line must count the problems above it"


def test_the_table_is_large_enough() -> None:
    assert len(case_files()) >= 20


@pytest.mark.parametrize("command", ["validate", "compile"])
def test_the_base_project_is_valid(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str], tripwire: Tripwire,
                                   restore_logging: None) -> None:
    """So that every case fails for the one reason it states."""
    build_project({}, tmp_path, tripwire.url)
    monkeypatch.chdir(tmp_path)

    assert run_cli([command, "pipelines/trades.yml"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert not tripwire.was_contacted()
