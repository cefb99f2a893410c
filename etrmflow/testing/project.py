"""A project folder in a temp directory, and the CLI run in it in-process."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sqlite3
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etrmflow.testing.expected import ExpectedRecords

Env = Mapping[str, "str | None"]
"""Environment overrides for a run: a value of None unsets the variable."""



# --- what a CLI run gave -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class CliResult:
    """The outcome of one in-process ``etrmflow`` command: exit code and everything printed."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr, handy in assertion messages: ``assert r.exit_code == 0, r.output``."""
        return f"$ etrmflow {' '.join(self.args)}\n--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"

    def json_logs(self) -> list[dict[str, Any]]:
        """Every stderr line of a ``--log-format json`` run, parsed; AssertionError on a non-JSON line."""
        entries = []
        for number, line in enumerate(self.stderr.splitlines(), 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"stderr line {number} is not JSON: {line!r}") from None
        return entries


# --- a project folder and the CLI run in it ----------------------------------------------------

@contextlib.contextmanager
def _environment(overrides: Env) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in overrides}
    try:
        for name, value in overrides.items():
            _set_env(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set_env(name, value)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """The CLI reconfigures the ``etrmflow`` loggers; put them back so other tests (caplog) work."""
    loggers = [logging.getLogger("etrmflow"), logging.getLogger("aiohttp")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved):
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate




class EtrmflowProject:
    """A throwaway project folder, and the real CLI run in-process inside it.

    ``env`` holds environment overrides applied to every run (None unsets a variable);
    ``target`` is the artifacts folder relative to the root (``target`` unless the project
    says otherwise).

    ::

        def test_pipeline(etrmflow_project, sandbox_vendor):
            etrmflow_project.write({
                "connectors/acme.yml": '''
                    name: acme
                    base_url: "{{ env_var('ACME_URL') }}"
                    auth: {type: api_key, in: header, name: X-API-Key, value: "{{ secret('ACME_KEY') }}"}
                    streams:
                      trades:
                        path: /api/v2/trades
                        records: $.trades
                        paginator: {type: cursor, cursor: $.next_cursor}
                ''',
                "pipelines/trades.yml": "name: trades\\nsource: {connector: acme, stream: trades}\\ncontract: trade\\n",
            })
            etrmflow_project.copy_from(REPO, "contracts")
            etrmflow_project.env.update(ACME_URL=sandbox_vendor.base_url, ACME_KEY="sandbox-key")
            result = etrmflow_project.run("run", "pipelines/trades.yml")
            assert result.exit_code == 0, result.output
            assert etrmflow_project.count("trades") == 238
            assert len(etrmflow_project.dead_letters("trades")) == 12
    """

    def __init__(self, root: Path, *, env: Env | None = None, target: str = "target") -> None:
        self.root = root
        self.env: dict[str, str | None] = dict(env or {})
        self.target = target

    def path(self, relative: str | Path) -> Path:
        return self.root / relative

    # --- files -------------------------------------------------------------------------------

    def write(self, files: Mapping[str, str]) -> None:
        """Write project files: ``{relative path: text}``; the text is dedented."""
        for relative, text in files.items():
            path = self.path(relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")

    def copy_from(self, source: str | Path, *names: str) -> None:
        """Copy files or folders (e.g. ``"connectors"``, ``"etrmflow.yml"``) from another project."""
        for name in names:
            origin, destination = Path(source) / name, self.path(name)
            if origin.is_dir():
                shutil.copytree(origin, destination, dirs_exist_ok=True)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination)

    def files(self, under: str | Path = ".") -> list[Path]:
        """Every file under the project (or under one of its folders), sorted."""
        return sorted(p for p in self.path(under).rglob("*") if p.is_file())

    def files_containing(self, needle: str | bytes, under: str | Path = ".") -> list[Path]:
        """Files whose bytes contain ``needle`` (e.g. a secret that must never be written)::

            assert etrmflow_project.files_containing(os.environ["ACME_CLIENT_SECRET"]) == []
        """
        raw = needle.encode() if isinstance(needle, str) else needle
        return [p for p in self.files(under) if raw in p.read_bytes()]

    # --- running -----------------------------------------------------------------------------

    def run(self, *args: str, env: Env | None = None) -> CliResult:
        """Run ``etrmflow ARGS`` in-process in the project folder; never raises for a failed run.

        ``env`` adds overrides for this run only, on top of ``self.env``.
        """
        from etrmflow.cli.main import run_cli

        stdout, stderr = io.StringIO(), io.StringIO()
        with _environment({**self.env, **(env or {})}), _working_directory(self.root), _logging_restored(), \
                contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = run_cli(list(args))
        return CliResult(args=tuple(args), exit_code=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())

    # --- artifacts ---------------------------------------------------------------------------

    def read_json(self, relative: str | Path) -> Any:
        return json.loads(self.path(relative).read_text(encoding="utf-8"))

    def plan(self) -> dict[str, Any]:
        """``target/plan.json`` as written by ``compile`` or ``run``."""
        return self.read_json(Path(self.target) / "plan.json")

    def run_results(self) -> dict[str, Any]:
        """``target/run_results.json`` of the last run."""
        return self.read_json(Path(self.target) / "run_results.json")

    def pipeline_result(self, name: str | None = None) -> dict[str, Any]:
        """One pipeline's entry in run_results.json (the only one if ``name`` is None)."""
        pipelines = self.run_results()["pipelines"]
        if name is None:
            assert len(pipelines) == 1, f"{len(pipelines)} pipelines ran; name one"
            return pipelines[0]
        return next(p for p in pipelines if p["name"] == name)

    def dead_letters(self, pipeline: str, path: str | Path | None = None) -> list[dict[str, Any]]:
        """The dead letters of a pipeline (default ``target/dead_letter/PIPELINE.jsonl``); [] if none."""
        file = self.path(path or Path(self.target) / "dead_letter" / f"{pipeline}.jsonl")
        if not file.exists():
            return []
        entries = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [entry for entry in entries if "resolves" not in entry]  # resolution lines are no letters

    # --- SQLite ------------------------------------------------------------------------------

    def database(self, path: str | Path | None = None) -> Path:
        return self.path(path or Path(self.target) / "etrmflow.db")

    def query(self, sql: str, params: tuple[Any, ...] = (), *, database: str | Path | None = None) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the project's SQLite database (default target/etrmflow.db)."""
        file = self.database(database)
        assert file.exists(), f"no database at {file}"
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as connection:
            return connection.execute(sql, params).fetchall()

    def rows(self, table: str, *, database: str | Path | None = None) -> list[dict[str, Any]]:
        """Every row of a table, as dicts."""
        file = self.database(database)
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(f'SELECT * FROM "{table}"')]

    def tables(self, *, database: str | Path | None = None) -> list[str]:
        """Table names in the database, sorted; [] if there is no database file."""
        if not self.database(database).exists():
            return []
        return [row[0] for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                                             database=database)]

    def count(self, table: str, *, database: str | Path | None = None) -> int:
        return self.query(f'SELECT COUNT(*) FROM "{table}"', database=database)[0][0]

    def assert_loaded_exactly(self, expected: ExpectedRecords, *, table: str, pipeline: str,
                              id_field: str = "trade_id", database: str | Path | None = None) -> None:
        """Every valid record is in ``table`` once, every broken one in the dead letters once,
        with at least one reason, and nothing else is in either."""
        loaded = [row[0] for row in self.query(f'SELECT "{id_field}" FROM "{table}"', database=database)]
        assert len(loaded) == len(set(loaded)), f"duplicate rows in {table}"
        assert set(loaded) == expected.valid, _difference("table " + table, set(loaded), expected.valid)
        letters = self.dead_letters(pipeline)
        quarantined = [letter["record"].get(id_field) for letter in letters]
        assert len(quarantined) == len(set(quarantined)), f"a record was quarantined twice: {quarantined}"
        assert set(quarantined) == set(expected.invalid), _difference("dead letters", set(quarantined),
                                                                      set(expected.invalid))
        assert all(letter["violations"] for letter in letters), "a dead letter has no reason"


def _difference(where: str, found: set[str], wanted: frozenset[str] | set[str]) -> str:
    return (f"{where}: missing {sorted(wanted - found)[:10]}, unexpected {sorted(found - wanted)[:10]} "
            f"({len(found)} found, {len(wanted)} expected)")
