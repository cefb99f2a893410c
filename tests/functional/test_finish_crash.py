"""A run killed while it writes a whole-dataset step's output (kill -9 from inside the run,
between two of the output's batches), then resumed, leaves exactly what a clean run leaves:
in ``append`` mode too, where nothing but the batch ids can tell a row already written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from etrmflow.testing import EtrmflowProject, PostgresDatabase, SandboxFactory

from . import REPO, TRADES, sandbox_project
from .test_postgres_runs import DSN, database_env

# Kills its own process on the CRASH_AT-th output chunk: a crash mid-finish, not a mock of one.
CRASH_STEP = """\
import os
import signal

calls = 0


def crash_between_batches(frame):
    global calls
    calls += 1
    if os.environ.get("CRASH_AT") == str(calls):
        os.kill(os.getpid(), signal.SIGKILL)
    return frame
"""
PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - {type: dedupe, key: [counterparty_lei], order_by: [updated_at], chunk_rows: 4}
  - {type: python, function: "crash:crash_between_batches"}
sinks:
  - SINK
"""
SINKS = {
    "sqlite": "{{type: sqlite, path: target/etrmflow.db, table: latest, mode: append}}",
    "parquet": "{{type: parquet, path: target/latest, mode: append}}",
    # each project its own schema of one database
    "postgres": '{{type: postgres, dsn: "' + DSN.replace("{", "{{").replace("}", "}}") + '", schema: {schema}, '
                'table: latest, mode: append}}',
}


def _project(root: Path, vendor: Any, sink: str, database: PostgresDatabase | None) -> EtrmflowProject:
    project = sandbox_project(EtrmflowProject(root), vendor, auth="{type: bearer, token: sandbox-token}")
    project.write({"pipelines/trades.yml": PIPELINE.replace("SINK", SINKS[sink].format(schema=root.name)),
                   "crash.py": CRASH_STEP})
    if database is not None:
        project.env.update(database_env(database))
    return project


def _rows(project: EtrmflowProject, sink: str, database: PostgresDatabase | None) -> list[tuple[Any, ...]]:
    """What the sink holds, without what differs between two runs (run id, load time)."""
    if sink == "sqlite":
        rows = project.rows("latest")
    elif sink == "parquet":
        rows = pq.read_table(project.path("target/latest")).to_pylist()
    else:
        assert database is not None
        names = [name for (name,) in database.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'latest' "
            "ORDER BY ordinal_position", (project.root.name,))]
        rows = [dict(zip(names, row)) for row in database.query(f"SELECT * FROM {project.root.name}.latest")]
    return sorted(tuple(sorted((k, str(v)) for k, v in row.items()
                               if k not in ("_etrmflow_run_id", "_etrmflow_loaded_at"))) for row in rows)


@pytest.fixture
def database(request: pytest.FixtureRequest, sink: str) -> PostgresDatabase | None:
    """The real PostgreSQL database, for the postgres sink only (the others need no server)."""
    return request.getfixturevalue("postgresql_database") if sink == "postgres" else None


@pytest.mark.slow
@pytest.mark.parametrize("sink", sorted(SINKS))
def test_a_run_killed_mid_finish_then_resumed_writes_each_row_once(
        tmp_path: Path, sandbox_vendor_factory: SandboxFactory, sink: str, database: PostgresDatabase | None) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    killed = _project(tmp_path / "killed", vendor, sink, database)
    clean = _project(tmp_path / "clean", vendor, sink, database)
    env = {**os.environ, **killed.env, "PYTHONPATH": str(REPO), "CRASH_AT": "3"}

    crashed = subprocess.run([sys.executable, "-m", "etrmflow", "run", "pipelines/trades.yml"],
                             cwd=killed.root, env=env, capture_output=True, text=True, check=False)
    assert crashed.returncode == -9, crashed.stderr
    if sink == "sqlite":  # two of the output's batches were committed before the crash
        assert killed.count("latest") > 0
    elif sink == "postgres":
        assert database is not None and database.query("SELECT count(*) FROM killed.latest")[0][0] > 0

    resumed = killed.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert "resuming trades" in resumed.stderr
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0
    loaded = _rows(killed, sink, database)
    assert loaded == _rows(clean, sink, database)
    assert len(loaded) == len({dict(row)["counterparty_lei"] for row in loaded})  # one row per key: none twice
