"""Pipelines loading a real PostgreSQL server: the CLI end to end, resume after kill -9, bad credentials."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from etrmflow.testing import (
    EtrmflowProject,
    PostgresDatabase,
    SandboxFactory,
    expected_trades,
)

from . import REPO, TRADES, kill_mid_run, sandbox_project

BEARER = "{type: bearer, token: sandbox-token}"
DSN = ("postgresql://postgres:{{ secret('PG_PASSWORD') }}@127.0.0.1:{{ env_var('PG_PORT') }}"
       "/{{ env_var('PG_DATABASE') }}")
MODE_OPTIONS = {"upsert": "", "append": "", "replace": "", "replace_partition": "    partition_by: [product_code]\n"}


def pipeline(*, schema: str = "public", mode: str = "upsert") -> str:
    return (f"name: trades\n"
            f"source: {{connector: vendor, stream: trades}}\n"
            f"contract: trade\n"
            f"sinks:\n"
            f"  - type: postgres\n"
            f"    dsn: \"{DSN}\"\n"
            f"    schema: {schema}\n"
            f"    table: trades\n"
            f"    mode: {mode}\n"
            f"{MODE_OPTIONS[mode]}")


def database_env(database: PostgresDatabase) -> dict[str, str]:
    return {"PG_PASSWORD": database.password, "PG_PORT": str(database.port), "PG_DATABASE": database.dbname}


def postgres_project(project: EtrmflowProject, vendor: Any, database: PostgresDatabase, **options: str) -> EtrmflowProject:
    sandbox_project(project, vendor, auth=BEARER)
    project.write({"pipelines/trades.yml": pipeline(**options)})
    project.env.update(database_env(database))
    return project


def trade_ids(database: PostgresDatabase, schema: str = "public") -> list[str]:
    return [trade_id for (trade_id,) in database.query(f"SELECT trade_id FROM {schema}.trades ORDER BY trade_id")]


def test_a_pipeline_loads_postgres_and_a_rerun_adds_no_row(etrmflow_project: EtrmflowProject,
                                                            sandbox_vendor_factory: SandboxFactory,
                                                            postgresql_database: PostgresDatabase) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = postgres_project(etrmflow_project, vendor, postgresql_database)

    first, second = project.run("run", "pipelines/trades.yml"), project.run("run", "pipelines/trades.yml")

    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    expected = expected_trades(vendor.config)
    assert trade_ids(postgresql_database) == sorted(expected.valid)
    assert (f"postgres 127.0.0.1/{postgresql_database.dbname} table public.trades (upsert on trade_id, version): "
            f"62 rows") in second.stdout
    run_id = project.run_results()["run_id"]
    assert postgresql_database.query("SELECT DISTINCT _etrmflow_run_id FROM trades") == [(run_id,)]
    price, notional, legs = postgresql_database.query(
        "SELECT price, notional, legs FROM trades WHERE trade_id = 'ACME-T-0000065'")[0]
    assert (price.as_tuple().exponent, notional.as_tuple().exponent) == (-2, -2)  # numeric(18,2): exact cents
    assert isinstance(legs, (list, type(None)))
    assert project.files_containing(postgresql_database.password) == []
    assert postgresql_database.password not in first.output + second.output
    assert "${secret:PG_PASSWORD}" in project.path("target/plan.json").read_text()


def test_a_wrong_password_fails_the_run_before_anything_is_fetched(etrmflow_project: EtrmflowProject,
                                                                   sandbox_vendor_factory: SandboxFactory,
                                                                   postgresql_database: PostgresDatabase) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = postgres_project(etrmflow_project, vendor, postgresql_database)

    result = project.run("run", "pipelines/trades.yml", env={"PG_PASSWORD": "not-the-password-5e1d"})

    assert result.exit_code == 1, result.output
    error = project.pipeline_result()["error"]
    assert error.startswith(f"postgres sink (table public.trades): cannot connect to postgres@127.0.0.1:"
                            f"{postgresql_database.port}/{postgresql_database.dbname}: ")
    assert 'password authentication failed for user "postgres"' in error
    assert vendor.stats()["data_requests"] == 0
    assert project.files_containing("not-the-password-5e1d") == []
    assert "not-the-password-5e1d" not in result.output


# --- kill -9 mid-run, then --resume ----------------------------------------------------------------

def _table(database: PostgresDatabase, schema: str) -> list[tuple[Any, ...]]:
    """Every row but the lineage that differs between two runs (run id, load time)."""
    columns = [name for (name,) in database.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'trades' "
        "AND column_name NOT IN ('_etrmflow_run_id', '_etrmflow_loaded_at') ORDER BY ordinal_position", (schema,))]
    listed = ", ".join(f'"{c}"' for c in columns)
    return database.query(f"SELECT {listed} FROM {schema}.trades ORDER BY {listed}")


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODE_OPTIONS))
def test_kill_9_mid_run_then_resume_leaves_the_table_of_a_clean_run(
        mode: str, tmp_path: Path, sandbox_vendor_factory: SandboxFactory,
        postgresql_database: PostgresDatabase) -> None:
    earlier = sandbox_vendor_factory(trades=90, seed=3)  # rows of an earlier run, with other trades
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["slow:at=5,delay=30"])
    projects = {}
    for name in ("killed", "clean"):
        project = postgres_project(EtrmflowProject(tmp_path / name), earlier, postgresql_database,
                                   schema=name, mode=mode)
        assert project.run("run", "pipelines/trades.yml").exit_code == 0
        project.env["SANDBOX_URL"] = vendor.base_url
        projects[name] = project
    killed, clean = projects["killed"], projects["clean"]

    kill_mid_run(killed.root, {**os.environ, **database_env(postgresql_database), "SANDBOX_URL": vendor.base_url,
                                "PYTHONPATH": str(REPO)})
    if mode == "replace":
        assert len(trade_ids(postgresql_database, "killed")) == len(expected_trades(earlier.config).valid)
    vendor.reset()
    vendor.set_faults([])
    resumed = killed.run("run", "--resume", "pipelines/trades.yml")
    assert resumed.exit_code == 0, resumed.output
    assert vendor.stats()["data_requests"] == 3  # pages 5, 6 and 7
    assert clean.run("run", "pipelines/trades.yml").exit_code == 0

    assert _table(postgresql_database, "killed") == _table(postgresql_database, "clean")
    # Every valid trade of the resumed run is in the table once, whatever the mode.
    loaded = postgresql_database.query("SELECT trade_id, version FROM killed.trades WHERE _etrmflow_run_id = %s",
                                       (killed.pipeline_result()["run_id"],))
    assert len(loaded) == len(set(loaded))
    assert {trade_id for trade_id, _ in loaded} == expected_trades(vendor.config).valid
