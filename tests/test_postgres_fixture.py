"""The test kit's PostgreSQL server: where its binaries come from, and the pgserver fallback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from etrmflow.testing.postgres import (
    BINDIR_VARIABLE,
    PostgresServer,
    PostgresUnavailable,
    find_bindir,
    pgserver_bindir,
)


def fake_bindir(folder: Path) -> Path:
    folder.mkdir()
    for name in ("initdb", "postgres"):
        (folder / name).write_text("#!/bin/sh\n")
    return folder


def test_the_environment_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINDIR_VARIABLE, str(fake_bindir(tmp_path / "bin")))
    assert find_bindir() == (tmp_path / "bin", BINDIR_VARIABLE)


def test_an_environment_variable_naming_no_binaries_is_an_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINDIR_VARIABLE, str(tmp_path))
    with pytest.raises(PostgresUnavailable, match=f"{BINDIR_VARIABLE}={tmp_path} holds no initdb and postgres"):
        find_bindir()


def test_without_binaries_on_the_machine_the_pgserver_wheel_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BINDIR_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("etrmflow.testing.postgres._debian_bindirs", list)
    assert find_bindir() == (pgserver_bindir(), "the pgserver wheel")


@pytest.mark.slow
def test_the_pgserver_wheel_starts_a_server() -> None:
    bindir = pgserver_bindir()
    assert bindir is not None, "the test extra installs pgserver"
    server = PostgresServer(bindir)
    try:
        server.start()
        database = server.create_database()
        assert "PostgreSQL" in database.query("SELECT version()")[0][0]
    finally:
        server.stop()
    assert not server.root.exists()


def _serving(pid: int, root: Path) -> bool:
    """Whether ``pid`` is still the server of the cluster in ``root``."""
    try:
        return str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads /proc to see the server process")
def test_a_server_outliving_its_killed_test_session_is_stopped_and_removed() -> None:
    script = ("import time\nfrom etrmflow.testing.postgres import start_server\n"
              "server = start_server()\nprint(server._process.pid, server.root, flush=True)\ntime.sleep(600)\n")
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, root = session.stdout.readline().split() if session.stdout else ("", "")
        assert _serving(int(pid), Path(root)) and Path(root, "data").is_dir()
    finally:
        session.kill()  # as a timeout or the OOM killer would: no teardown runs
        session.wait(timeout=30)
    deadline = time.monotonic() + 60
    while (_serving(int(pid), Path(root)) or Path(root).exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _serving(int(pid), Path(root))
    assert not Path(root).exists()
