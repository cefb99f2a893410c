"""The test kit's PostgreSQL server: where its binaries come from, and the pgserver fallback."""

from __future__ import annotations

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
