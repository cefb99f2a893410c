"""`etrmflow run --dry-run`: the first request of each pipeline, credentials masked, nothing sent."""

from __future__ import annotations

from pathlib import Path

from etrmflow.sandbox import ThreadedSandbox
from etrmflow.testing import EtrmflowProject, sandbox_connector

REPO = Path(__file__).resolve().parents[1]
CANARY = "canary-Secret-7f3a9"


def test_oauth_pipeline_shows_its_first_request_and_sends_nothing(
        etrmflow_project: EtrmflowProject, sandbox_vendor: ThreadedSandbox) -> None:
    etrmflow_project.copy_from(REPO, "etrmflow.yml", "connectors", "contracts", "pipelines")
    env = {"ACME_BASE_URL": sandbox_vendor.base_url, "ACME_CLIENT_SECRET": CANARY, "ACME_CLIENT_ID": None}

    result = etrmflow_project.run("run", "--dry-run", "pipelines/acme_trades.yml", env=env)

    assert result.exit_code == 0, result.output
    base = sandbox_vendor.base_url
    assert result.stdout == (
        "acme_trades (acme_etrm.trades):\n"
        f"  first: POST {base}/oauth2/token for a token (oauth2_client_credentials; not requested in a dry run)\n"
        f"  GET {base}/api/v2/trades?limit=100\n"
        "    User-Agent: etrmflow\n"
        "    Authorization: Bearer ***\n"
        "Dry run: 1 pipeline(s) checked; nothing was sent.\n")
    stats = sandbox_vendor.stats()
    assert (stats["requests"], stats["data_requests"], stats["tokens_issued"]) == ({}, 0, 0)
    assert CANARY not in result.stdout + result.stderr
    assert etrmflow_project.files_containing(CANARY) == []
    assert not etrmflow_project.path("target/run_results.json").exists()


def test_api_keys_in_headers_and_query_are_masked(etrmflow_project: EtrmflowProject,
                                                  sandbox_vendor: ThreadedSandbox) -> None:
    query_auth = "{type: api_key, in: query, name: token, value: \"{{ secret('SANDBOX_KEY') }}\"}"
    etrmflow_project.copy_from(REPO, "contracts")
    etrmflow_project.write({
        "connectors/vendor.yml": sandbox_connector(page_size=20),
        "connectors/vendor_q.yml": sandbox_connector(auth=query_auth, name="vendor_q"),
        "pipelines/a.yml": "name: a\nsource: {connector: vendor, stream: trades}\ncontract: trade\n",
        "pipelines/b.yml": "name: b\nsource: {connector: vendor_q, stream: trades}\ncontract: trade\n",
    })
    env = {"SANDBOX_URL": sandbox_vendor.base_url, "SANDBOX_KEY": CANARY}

    result = etrmflow_project.run("run", "--dry-run", env=env)

    assert result.exit_code == 0, result.output
    base = sandbox_vendor.base_url
    assert result.stdout == (
        "a (vendor.trades):\n"
        f"  GET {base}/api/v2/trades?limit=20\n"
        "    User-Agent: etrmflow\n"
        "    X-API-Key: ***\n"
        "b (vendor_q.trades):\n"
        f"  GET {base}/api/v2/trades?limit=100&token=***\n"
        "    User-Agent: etrmflow\n"
        "Dry run: 2 pipeline(s) checked; nothing was sent.\n")
    assert sandbox_vendor.stats()["requests"] == {}
    assert CANARY not in result.stdout + result.stderr


def test_a_missing_secret_fails_the_dry_run_as_it_would_fail_the_run(etrmflow_project: EtrmflowProject) -> None:
    etrmflow_project.copy_from(REPO, "contracts")
    etrmflow_project.write({
        "connectors/vendor.yml": sandbox_connector(),
        "pipelines/a.yml": "name: a\nsource: {connector: vendor, stream: trades}\ncontract: trade\n",
    })

    result = etrmflow_project.run("run", "--dry-run", env={"SANDBOX_URL": "http://127.0.0.1:9", "SANDBOX_KEY": None})

    assert result.exit_code == 2
    assert "secret 'SANDBOX_KEY' is not set" in result.stderr
    assert result.stdout == ""
