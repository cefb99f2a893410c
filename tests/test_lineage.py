"""`etrmflow lineage`: the real CLI in a temp project after two real runs against the sandbox vendor
over loopback; real SQLite, dead-letter and audit files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etrmflow.lineage import BadKey, parse_key
from etrmflow.sandbox import ThreadedSandbox
from etrmflow.testing import EtrmflowProject, sandbox_connector

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FILE = "pipelines/trades.yml"
CONNECTOR = sandbox_connector(page_size=100, auth="{type: api_key, in: header, name: X-API-Key, value: sandbox-key}")
PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}
"""
BAD_LEI = "ACME-T-0000013"
"""A sandbox trade (seed 7) quarantined for its LEI check digits."""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[EtrmflowProject, list[str]]:
    """A project run twice against the same vendor, and the two run ids."""
    project = EtrmflowProject(tmp_path_factory.mktemp("lineage"))
    project.write({"connectors/vendor.yml": CONNECTOR, PIPELINE_FILE: PIPELINE,
                   "contracts/trade.yml": (REPO / "contracts/trade.yml").read_text(encoding="utf-8")})
    run_ids = []
    with ThreadedSandbox() as vendor:
        project.env["SANDBOX_URL"] = vendor.base_url
        for _ in range(2):
            result = project.run("run", PIPELINE_FILE)
            assert result.exit_code == 0, result.output
            run_ids.append(project.run_results()["run_id"])
    return project, run_ids


def lineage_json(project: EtrmflowProject, *key: str) -> dict[str, Any]:
    result = project.run("lineage", PIPELINE_FILE, *key, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_loaded_key_shows_its_row_run_batch_and_vendor_requests(two_runs: tuple[EtrmflowProject, list[str]]) -> None:
    project, (first, second) = two_runs
    stored = project.query("SELECT version, _etrmflow_run_id, _etrmflow_batch_id, _etrmflow_page_sha256 "
                           "FROM trades WHERE trade_id = 'ACME-T-0000001'")
    assert len(stored) == 1 and stored[0][1] == second
    version, _, batch_id, page = stored[0]
    found = lineage_json(project, "ACME-T-0000001", str(version))
    assert (found["found"], found["key"], found["quarantined"]) == (
        True, {"trade_id": "ACME-T-0000001", "version": str(version)}, [])
    [row] = found["written"]
    assert (row["run_id"], row["batch_id"], row["page_sha256"]) == (second, batch_id, page)
    assert (row["values"]["trade_id"], row["values"]["version"]) == ("ACME-T-0000001", version)
    # The identical page was fetched by both runs; the row's own run comes first.
    assert [(f["run_id"], f["method"], f["status"], f["page"]) for f in row["fetches"]] == [
        (second, "GET", 200, 0), (first, "GET", 200, 0)]
    assert "/trades" in row["fetches"][0]["url"] and "sandbox-key" not in json.dumps(found)
    assert any("keeps only the latest load" in note for note in found["notes"])


def test_a_quarantined_key_shows_its_dead_letter_reasons_and_request(
        two_runs: tuple[EtrmflowProject, list[str]]) -> None:
    project, (first, second) = two_runs
    found = lineage_json(project, f"trade_id={BAD_LEI}")
    assert found["written"] == []
    [letter] = found["quarantined"]  # the second run found it again, and did not store it twice
    assert (letter["status"], letter["run_id"], letter["record"]["trade_id"]) == ("open", first, BAD_LEI)
    assert [(v["pointer"], v["keyword"]) for v in letter["violations"]] == [("/counterparty_lei", "format")]
    assert [(f["run_id"], f["page"]) for f in letter["fetches"]] == [(first, 0), (second, 0)]
    assert letter["fetches"][0]["url"] == letter["source"]["request_url"]


def test_table_output_names_row_letter_and_request(two_runs: tuple[EtrmflowProject, list[str]]) -> None:
    project, (_, second) = two_runs
    result = project.run("lineage", PIPELINE_FILE, BAD_LEI)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"trades: trade_id={BAD_LEI}: 0 row(s) written, 1 dead letter(s)"
    assert "/counterparty_lei format:" in result.output and "fetched: GET http://127.0.0.1:" in result.output
    loaded = project.run("lineage", PIPELINE_FILE, "ACME-T-0000001")
    assert loaded.exit_code == 0 and f"run {second}, batch " in loaded.output


def test_an_unknown_key_exits_1(two_runs: tuple[EtrmflowProject, list[str]]) -> None:
    project, _ = two_runs
    result = project.run("lineage", PIPELINE_FILE, "NO-SUCH-TRADE", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["found"] is False


def test_a_key_that_does_not_fit_is_a_usage_error(two_runs: tuple[EtrmflowProject, list[str]]) -> None:
    project, _ = two_runs
    result = project.run("lineage", PIPELINE_FILE, "A", "1", "extra")
    assert result.exit_code == 2
    assert "3 values given, but the primary key has 2 column(s): trade_id, version" in result.stderr


@pytest.mark.parametrize(("values", "expected"), [
    (["T1", "2"], {"trade_id": "T1", "version": "2"}),
    (["T1"], {"trade_id": "T1"}),
    (["version=2", "trade_id=T1"], {"trade_id": "T1", "version": "2"}),
    (["trade_id=a=b"], {"trade_id": "a=b"}),
])
def test_parse_key(values: list[str], expected: dict[str, str]) -> None:
    assert parse_key(values, ("trade_id", "version")) == expected


@pytest.mark.parametrize(("values", "message"), [
    (["trade_id=T1", "2"], "give either every key value in order or only name=value pairs, not both"),
    (["trade_id=T1", "trade_id=T2"], "key column trade_id given twice"),
])
def test_parse_key_rejects(values: list[str], message: str) -> None:
    with pytest.raises(BadKey, match=message):
        parse_key(values, ("trade_id", "version"))
