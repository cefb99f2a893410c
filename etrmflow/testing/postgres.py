"""A throwaway PostgreSQL server for tests, started by the tests themselves.

The server binaries are looked up in this order, and the first complete set is used:

1. the folder named by the ``ETRMFLOW_TEST_POSTGRES_BINDIR`` environment variable;
2. ``pg_config --bindir``;
3. the folder of ``initdb`` on ``PATH``;
4. ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package), newest first;
5. the binaries shipped in the ``pgserver`` wheel (in the ``test`` extra), so that a machine
   with nothing but Python runs the tests too.

``initdb`` makes a cluster in a temporary folder; ``postgres`` listens on 127.0.0.1 on a free
port, with its socket in that folder, and is stopped when the session ends. A small watchdog
process stops it and removes the folder if the test session dies without stopping it (killed,
say), so no server outlives its tests. PostgreSQL
refuses to run as root, so under uid 0 both run as the ``postgres`` user (else ``nobody``).
When no server can be started the fixture fails with the reason: a test that needs a
database is never skipped.

Fixtures::

    def test_load(postgresql_database):             # a fresh, empty database per test
        sink = PostgresSink({"dsn": postgresql_database.dsn, "table": "trades"})
        ...
        assert postgresql_database.query("SELECT count(*) FROM trades") == [(238,)]

``postgresql_dsn`` is the same database's DSN alone; ``postgresql_server`` the session's server.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pwd

BINDIR_VARIABLE = "ETRMFLOW_TEST_POSTGRES_BINDIR"
SUPERUSER = "postgres"
_START_TIMEOUT = 60.0
_SPEED_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
"""Durability off: the cluster lives for one test session and is thrown away."""


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started; the message says why."""


# --- finding the binaries ------------------------------------------------------------------------

def _complete(folder: Path | None) -> bool:
    return folder is not None and all((folder / name).is_file() for name in ("initdb", "postgres"))


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(found.stdout.strip()) if found.returncode == 0 else None


def _debian_bindirs() -> list[Path]:
    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))

    return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)


def pgserver_bindir() -> Path | None:
    """The binaries inside the installed ``pgserver`` wheel (not imported: only its files)."""
    spec = find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def find_bindir() -> tuple[Path, str]:
    """The folder holding ``initdb`` and ``postgres``, and where it was found."""
    override = os.environ.get(BINDIR_VARIABLE)
    if override:
        if not _complete(Path(override)):
            raise PostgresUnavailable(f"{BINDIR_VARIABLE}={override} holds no initdb and postgres")
        return Path(override), BINDIR_VARIABLE
    initdb = shutil.which("initdb")
    candidates = [(_pg_config_bindir(), "pg_config --bindir"),
                  (Path(initdb).resolve().parent if initdb else None, "initdb on PATH"),
                  *((folder, "Debian's postgresql package") for folder in _debian_bindirs()),
                  (pgserver_bindir(), "the pgserver wheel")]
    for folder, origin in candidates:
        if folder is not None and _complete(folder):
            return folder, origin
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, postgres) found: install the test extra "
        "(python -m pip install -e \".[test]\", which brings the pgserver wheel), or Debian's "
        f"postgresql package, or set {BINDIR_VARIABLE} to the folder holding them")


# --- the server ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None when we are not root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd  # POSIX only: importing the test kit must work everywhere

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root, and neither a 'postgres' nor a 'nobody' user exists "
                              "to run PostgreSQL as (it refuses to run as root)")


_WATCHDOG = r"""
import os, pathlib, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the tests is for them to handle
pid, root = int(sys.argv[1]), sys.argv[2]

def running():
    # The server, never a process that took over its pid after it stopped (where /proc tells).
    if pathlib.Path("/proc/self").exists():
        try:
            return root.encode() in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True

if sys.stdin.buffer.read() != b"stopped":  # end of file unannounced: the test session died
    if running():
        try:
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the cluster is thrown away
        except OSError:
            pass
        deadline = time.monotonic() + 30
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
    shutil.rmtree(root, ignore_errors=True)
"""
"""Run beside the server: stops it, and removes its folder, unless told ``stopped`` first."""


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = secrets.token_hex(12)
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="etrmflow-postgres-"))
        self.account = _unprivileged_account()
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._databases = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self.account is not None:
            self._hand_over_to_account()
        self._initdb()
        self.port = _free_port()
        log = (self.root / "postgres.log").open("ab")
        command = [str(self.bindir / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
                   "-h", "127.0.0.1", "-k", str(self.root), *(f"-c{s}" for s in _SPEED_SETTINGS)]
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **self._as_account())
        log.close()
        self._watch(self._process.pid)
        self._wait_until_ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: roll back, disconnect, stop
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
        self._unwatch()

    def _watch(self, pid: int) -> None:
        """A watchdog in a session of its own (a signal to the tests' process group spares it),
        reading its stdin until we close it."""
        self._watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(pid), str(self.root)],
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          start_new_session=True)

    def _unwatch(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None or watchdog.stdin is None:
            return
        with contextlib.suppress(OSError):  # it died: nothing to tell it
            watchdog.stdin.write(b"stopped")
        with contextlib.suppress(OSError):
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait(timeout=10)

    # -- use --------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        """A ``postgresql://`` URI for ``dbname`` (with the superuser's password unless given)."""
        secret = self.password if password is None else password
        return f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> PostgresDatabase:
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return PostgresDatabase(server=self, dbname=name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- helpers ----------------------------------------------------------------------------

    def _as_account(self) -> dict[str, Any]:
        """subprocess arguments that run a command as the unprivileged account (when root)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self.account is None:
            return {"env": env}
        return {"env": env, "user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _hand_over_to_account(self) -> None:
        assert self.account is not None
        os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        if not self._runs_as_account():
            # The pgserver wheel lives under root's home, which other users cannot enter: use a
            # copy of its installation. bin, lib and share keep their relative places, and so
            # does the wheel's pgserver.libs (the binaries' RPATH is $ORIGIN/../../../pgserver.libs).
            install = self.bindir.parent
            copies = self.root / "pginstall"
            shutil.copytree(install, copies / install.parent.name / install.name, symlinks=True)
            libs = install.parent.parent / f"{install.parent.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copies / libs.name, symlinks=True)
            self.bindir = copies / install.parent.name / install.name / self.bindir.name

    def _runs_as_account(self) -> bool:
        try:
            found = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True,
                                   timeout=30, check=False, **self._as_account())
        except (OSError, subprocess.SubprocessError):
            return False
        return found.returncode == 0

    def _initdb(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self.account is not None:
            os.chown(password_file, self.account.pw_uid, self.account.pw_gid)
        command = [str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", SUPERUSER,
                   f"--pwfile={password_file}", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "--encoding=UTF8", "--locale=C", "--no-sync"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                                  **self._as_account())
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresUnavailable(f"initdb from {self.bindir} could not run: {exc}") from exc
        finally:
            password_file.unlink()
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb from {self.bindir} failed (exit {done.returncode}):\n"
                                      f"{done.stdout}{done.stderr}")

    def _wait_until_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PostgresUnavailable(f"postgres from {self.bindir} exited with {self._process.returncode} "
                                          f"on startup:\n{self._log_tail()}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(f"postgres did not accept connections within {_START_TIMEOUT:.0f} s: "
                                              f"{exc}\n{self._log_tail()}") from exc
                time.sleep(0.1)

    def _log_tail(self) -> str:
        log = self.root / "postgres.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresDatabase:
    """An empty database of the test server, dropped after the test."""

    server: PostgresServer
    dbname: str

    @property
    def dsn(self) -> str:
        """``postgresql://postgres:PASSWORD@127.0.0.1:PORT/DBNAME``."""
        return self.server.dsn(self.dbname)

    @property
    def password(self) -> str:
        return self.server.password

    @property
    def port(self) -> int:
        return self.server.port

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of one statement (none for a statement that returns no rows)."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


def start_server() -> PostgresServer:
    """Find binaries and start a server; PostgresUnavailable says why it could not."""
    bindir, origin = find_bindir()
    server = PostgresServer(bindir)
    try:
        server.start()
    except BaseException as exc:
        server.stop()
        if isinstance(exc, PostgresUnavailable):
            raise PostgresUnavailable(f"{exc}\n(binaries from {origin}: {bindir})") from exc
        raise
    return server


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session; fails (never skips) if none can start."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        pytest.fail(f"cannot start a PostgreSQL server for the tests: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def postgresql_database(postgresql_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A new, empty database on the session's server, dropped after the test."""
    database = postgresql_server.create_database()
    yield database
    postgresql_server.drop_database(database.dbname)


@pytest.fixture
def postgresql_dsn(postgresql_database: PostgresDatabase) -> str:
    """The DSN (``postgresql://user:password@127.0.0.1:port/db``) of a new, empty database."""
    return postgresql_database.dsn
