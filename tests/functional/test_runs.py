"""Whole runs: reruns are idempotent, an expired token is refreshed once, the example project works."""

from __future__ import annotations

import re

import pyarrow.parquet as pq

from etrmflow.sandbox import SandboxConfig
from etrmflow.testing import EtrmflowProject, SandboxFactory, expected_trades

from . import DEFECT_REASONS, PAGE_SIZE, REPO, TRADES, assert_every_trade_once, sandbox_project

PAGES = -(-TRADES // PAGE_SIZE)
OAUTH = ("{type: oauth2_client_credentials, token_url: /oauth2/token, client_id: demo, "
         "client_secret: \"{{ secret('VENDOR_SECRET') }}\"}")


def test_a_rerun_upserts_the_same_rows_and_adds_no_dead_letter(etrmflow_project: EtrmflowProject,
                                                               sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=OAUTH)
    project.env["VENDOR_SECRET"] = "demo-secret"
    first = project.run("run", "pipelines/trades.yml")
    letters = project.path("target/dead_letter/trades.jsonl").read_bytes()
    vendor.reset()

    second = project.run("run", "pipelines/trades.yml")

    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    assert_every_trade_once(project, vendor, pages=PAGES)
    assert project.pipeline_result()["counts"]["dead_letters_new"] == 0
    assert project.path("target/dead_letter/trades.jsonl").read_bytes() == letters
    run_ids = {row[0] for row in project.query("SELECT DISTINCT _etrmflow_run_id FROM trades")}
    assert run_ids == {project.run_results()["run_id"]}


def test_an_expired_token_is_refreshed_once_and_no_record_is_lost(etrmflow_project: EtrmflowProject,
                                                                  sandbox_vendor_factory: SandboxFactory) -> None:
    # The vendor forgets every token it issued when the 4th data request arrives, and answers it 401.
    vendor = sandbox_vendor_factory(trades=TRADES, token_ttl=30, faults=["expire-tokens:at=4"])
    project = sandbox_project(etrmflow_project, vendor, auth=OAUTH)

    result = project.run("run", "pipelines/trades.yml", env={"VENDOR_SECRET": "demo-secret"})

    assert result.exit_code == 0, result.output
    assert_every_trade_once(project, vendor, pages=PAGES, data_requests=PAGES + 1)
    assert vendor.stats()["tokens_issued"] == 2
    assert re.search(r"INFO    credentials refreshed after a 401; retrying GET http://127\.0\.0\.1:\d+"
                     r"/api/v2/trades \[request [0-9a-f]{12}\] once\n", result.stderr), result.stderr


def test_a_second_401_after_the_refresh_fails_the_run(etrmflow_project: EtrmflowProject,
                                                      sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["expire-tokens:at=4,burst=2"])
    project = sandbox_project(etrmflow_project, vendor, auth=OAUTH)

    result = project.run("run", "pipelines/trades.yml", env={"VENDOR_SECRET": "demo-secret"})

    assert result.exit_code == 1, result.output
    assert project.pipeline_result()["error"].endswith(
        '/api/v2/trades?limit=10&cursor=NzozMA answered 401 Unauthorized: {"error":"token_expired"}')
    assert (vendor.stats()["tokens_issued"], vendor.stats()["data_requests"]) == (2, 5)


def test_the_example_project_runs_and_reruns(etrmflow_project: EtrmflowProject) -> None:
    project = etrmflow_project
    project.copy_from(REPO, "connectors", "contracts", "pipelines", "etrmflow.yml")
    # The connector's defaults start the sandbox vendor in-process; nothing from the shell counts.
    project.env.update(ACME_BASE_URL=None, ACME_CLIENT_ID=None, ACME_CLIENT_SECRET=None)
    expected = expected_trades(SandboxConfig())

    runs = [project.run("run", "pipelines/acme_trades.yml") for _ in range(2)]

    assert [r.exit_code for r in runs] == [0, 0], runs[-1].output
    assert (len(expected.valid), len(expected.invalid)) == (238, 12)
    project.assert_loaded_exactly(expected, table="trades", pipeline="acme_trades")
    counts = project.pipeline_result()["counts"]
    assert (counts["pages"], counts["fetched"], counts["valid"], counts["quarantined"],
            counts["dead_letters_new"]) == (3, 250, 238, 12, 0)
    reasons = {letter["record"]["trade_id"]: [(v["pointer"], v["keyword"]) for v in letter["violations"]]
               for letter in project.dead_letters("acme_trades")}
    assert reasons == {trade: DEFECT_REASONS[defect] for trade, defect in expected.invalid.items()}
    parquet = pq.read_table(project.path("target/parquet/trades")).column("trade_id").to_pylist()
    assert sorted(parquet) == sorted(expected.valid)


def test_a_ca_bundle_that_cannot_be_loaded_fails_the_run_with_a_clear_message(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    project = sandbox_project(etrmflow_project, sandbox_vendor_factory(trades=5))
    connector = project.path("connectors/vendor.yml")
    connector.write_text(connector.read_text() + "tls: {ca_bundle: certs/missing.pem}\n")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output  # a failed run, not a crash (exit 3)
    assert "connector vendor (connectors/vendor.yml): tls.ca_bundle 'certs/missing.pem' cannot be loaded" in result.stderr
    assert "Traceback" not in result.output and not project.path("target/crash.log").exists()
