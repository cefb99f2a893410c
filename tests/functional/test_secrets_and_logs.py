"""Secrets never leave the process, and machine-readable logs are machine-readable."""

from __future__ import annotations

import pytest

from etrmflow.testing import (
    CliResult,
    EtrmflowProject,
    PostgresDatabase,
    SandboxFactory,
)

from . import REPO, TRADES, sandbox_project

CANARY = "canary-7c1f9e2b5d4a4f0e8b1c"
SECRET = "{{ secret('ETRMFLOW_CANARY_SECRET') }}"
CANARY_AUTH = {
    # name: (auth block, the sandbox setting that must equal the canary)
    "oauth2_client_credentials": ("{type: oauth2_client_credentials, token_url: /oauth2/token, "
                                  f"client_id: demo, client_secret: \"{SECRET}\"}}", "client_secret"),
    "oauth2_password": ("{type: oauth2_password, token_url: /oauth2/token, username: demo-user, "
                        f"password: \"{SECRET}\", token_field: id_token}}", "password"),
    # In the query, the secret is part of every request URL, and URLs go into dead letters.
    "api_key_query": (f'{{type: api_key, in: query, name: api_key, value: "{SECRET}"}}', "api_key"),
}
PIPELINE_WITH_EVERY_ARTIFACT = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}
  - {type: parquet, path: target/parquet/trades}
  - {type: csv, path: target/csv/trades.csv}
"""


def assert_canary_nowhere(project: EtrmflowProject, results: list[CliResult]) -> None:
    assert project.files_containing(CANARY) == []
    for result in results:
        assert CANARY not in result.stdout + result.stderr, result.output


@pytest.mark.parametrize("case", sorted(CANARY_AUTH))
def test_the_secret_is_in_no_file_and_no_output(case: str, etrmflow_project: EtrmflowProject,
                                                sandbox_vendor_factory: SandboxFactory) -> None:
    auth, setting = CANARY_AUTH[case]
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=2", "expire-tokens:at=5"], **{setting: CANARY})
    project = sandbox_project(etrmflow_project, vendor, auth=auth)
    project.write({"pipelines/trades.yml": PIPELINE_WITH_EVERY_ARTIFACT})
    project.env["ETRMFLOW_CANARY_SECRET"] = CANARY

    results = [project.run("compile", "pipelines/trades.yml"),
               project.run("run", "pipelines/trades.yml"),
               project.run("--log-level", "debug", "--log-format", "json", "run", "pipelines/trades.yml"),
               project.run("--log-level", "debug", "run", "pipelines/trades.yml")]

    assert [r.exit_code for r in results] == [0, 0, 0, 0], results[-1].output
    assert project.pipeline_result()["counts"]["valid"] == 62
    # The scan reads what was written: a loaded trade is found in the CSV, the database and
    # the statistics of its Parquet part; a quarantined one in the dead letters.
    assert [p.suffix for p in project.files_containing("ACME-T-0000065", "target")] == [".csv", ".db",
                                                                                       ".parquet"]
    assert [p.name for p in project.files_containing("ACME-T-0000033", "target")] == ["trades.jsonl"]
    assert_canary_nowhere(project, results)


@pytest.mark.parametrize("case", sorted(CANARY_AUTH))
def test_a_refused_secret_is_not_shown_either(case: str, etrmflow_project: EtrmflowProject,
                                              sandbox_vendor_factory: SandboxFactory) -> None:
    auth, _ = CANARY_AUTH[case]
    vendor = sandbox_vendor_factory(trades=TRADES)  # expects its demo credentials, not the canary
    project = sandbox_project(etrmflow_project, vendor, auth=auth)
    project.env["ETRMFLOW_CANARY_SECRET"] = CANARY

    results = [project.run("run", "pipelines/trades.yml"),
               project.run("--log-level", "debug", "--log-format", "json", "run", "pipelines/trades.yml")]

    refused_by = 1 if case == "api_key_query" else 2  # the data call's 401, or the token endpoint's refusal
    assert [r.exit_code for r in results] == [refused_by, refused_by]
    assert project.pipeline_result()["status"] == "failed"
    assert_canary_nowhere(project, results)


def test_compile_writes_a_plan_with_secret_markers_only(etrmflow_project: EtrmflowProject,
                                                        sandbox_vendor_factory: SandboxFactory) -> None:
    auth, _ = CANARY_AUTH["oauth2_client_credentials"]
    vendor = sandbox_vendor_factory(trades=TRADES, client_secret=CANARY)
    project = sandbox_project(etrmflow_project, vendor, auth=auth)

    result = project.run("compile", "pipelines/trades.yml", env={"ETRMFLOW_CANARY_SECRET": CANARY})

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("Wrote target/plan.json\n")
    auth_plan = project.plan()["pipelines"][0]["connector"]["auth"]
    assert auth_plan == {"type": "oauth2_client_credentials", "options": {
        "token_url": "/oauth2/token", "client_id": "demo",
        "client_secret": "${secret:ETRMFLOW_CANARY_SECRET}"}}
    assert CANARY not in project.path("target/plan.json").read_text()
    assert vendor.stats()["requests"] == {}  # compiling fetches nothing


def test_the_example_plan_keeps_the_secret_default_out(etrmflow_project: EtrmflowProject) -> None:
    project = etrmflow_project
    project.copy_from(REPO, "connectors", "contracts", "pipelines", "etrmflow.yml")
    project.env.update(ACME_BASE_URL=None, ACME_CLIENT_SECRET=None)

    result = project.run("compile", "pipelines/acme_trades.yml")

    assert result.exit_code == 0, result.output
    options = project.plan()["pipelines"][0]["connector"]["auth"]["options"]
    assert options["client_secret"] == "${secret:ACME_CLIENT_SECRET}"
    assert "demo-secret" not in project.path("target/plan.json").read_text()


POSTGRES_LOGINS = {
    # case: (the role's real password, how the pipeline gives the canary)
    "accepted, password option": (CANARY, ('dsn: "postgresql://{role}@127.0.0.1:{port}/{dbname}", '
                                           f'password: "{SECRET}"')),
    "refused, inside the dsn": ("another-password-0b9e", 'dsn: "postgresql://{role}:' + SECRET
                                + '@127.0.0.1:{port}/{dbname}"'),
}


@pytest.mark.parametrize("case", sorted(POSTGRES_LOGINS))
def test_a_database_password_is_in_no_file_and_no_output(case: str, etrmflow_project: EtrmflowProject,
                                                         sandbox_vendor_factory: SandboxFactory,
                                                         postgresql_database: PostgresDatabase) -> None:
    real_password, login = POSTGRES_LOGINS[case]
    database, role = postgresql_database, f"etl_{postgresql_database.dbname}"
    database.query(f"CREATE ROLE {role} LOGIN PASSWORD '{real_password}'")
    database.query(f'GRANT CREATE ON DATABASE "{database.dbname}" TO {role}')
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor,
                              auth="{type: api_key, in: header, name: X-API-Key, value: sandbox-key}")
    sink = login.replace("{role}", role).replace("{port}", str(database.port)).replace("{dbname}", database.dbname)
    project.write({"pipelines/trades.yml": PIPELINE_WITH_EVERY_ARTIFACT +
                   f"  - {{type: postgres, {sink}, schema: trading, table: trades}}\n"})
    project.env["ETRMFLOW_CANARY_SECRET"] = CANARY

    results = [project.run("compile", "pipelines/trades.yml"),
               project.run("run", "pipelines/trades.yml"),
               project.run("--log-level", "debug", "--log-format", "json", "run", "pipelines/trades.yml")]

    if case.startswith("accepted"):
        assert [r.exit_code for r in results] == [0, 0, 0], results[-1].output
        assert database.query("SELECT count(*) FROM trading.trades") == [(62,)]
    else:
        assert [r.exit_code for r in results] == [0, 1, 1], results[-1].output
        assert f'password authentication failed for user "{role}"' in project.pipeline_result()["error"]
    assert_canary_nowhere(project, results)


def assert_json_lines(result: CliResult) -> list[dict]:
    entries = result.json_logs()
    assert entries, result.output
    for entry in entries:
        assert {"ts", "level", "logger", "run_id", "event"} <= set(entry), entry
        assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2025-03-30T00:00:00.000Z"), entry
        assert entry["level"] in ("debug", "info", "warning", "error"), entry
    return entries


def test_json_logs_are_one_object_per_line(etrmflow_project: EtrmflowProject,
                                           sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=2"])
    project = sandbox_project(etrmflow_project, vendor,
                              auth="{type: api_key, in: header, name: X-API-Key, value: sandbox-key}")

    result = project.run("--log-format", "json", "--log-level", "debug", "run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    entries = assert_json_lines(result)
    assert {entry["run_id"] for entry in entries} == {project.run_results()["run_id"]}
    assert [e["level"] for e in entries].count("warning") == 1  # the retry of the 503
    assert [e["event"] for e in entries if e["level"] == "debug"][:1] == ["page 0 of trades: 10 records, "
                                                                         "0 quarantined"]


def test_json_logs_of_a_failed_run_are_json_too(etrmflow_project: EtrmflowProject,
                                                sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=2,burst=9"])
    project = sandbox_project(etrmflow_project, vendor,
                              auth="{type: api_key, in: header, name: X-API-Key, value: sandbox-key}")

    result = project.run("--log-format", "json", "run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    events = assert_json_lines(result)
    assert [e["level"] for e in events] == ["warning"] * 3 + ["error"]
    assert events[-1]["pipeline"] == "trades" and events[-1]["error_type"] == "RetriesExhausted"


def test_json_logs_of_a_config_error_are_json_too(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("--log-format", "json", "run", "pipelines/missing.yml")

    assert result.exit_code == 2
    assert_json_lines(result)
