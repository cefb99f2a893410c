"""``etrmflow run --threads N``: pipelines run side by side, each loading every record once."""

from __future__ import annotations

import time
from pathlib import Path

from etrmflow.testing import EtrmflowProject, SandboxFactory, expected_trades, sandbox_connector

REPO = Path(__file__).resolve().parents[1]
TRADES = 30
SLOW = "slow:delay=0.15"
"""Every data request waits: the run is bound by the vendor, as real runs usually are."""


def _project(root: Path, vendors: dict[str, str]) -> EtrmflowProject:
    """One pipeline ``<name>_trades`` per vendor, each with its own connector and table."""
    root.mkdir()
    project = EtrmflowProject(root)
    project.write({"etrmflow.yml": "name: concurrency\n"})
    project.copy_from(REPO, "contracts")
    for name, url in vendors.items():
        connector = sandbox_connector(page_size=10, name=name).replace("SANDBOX_URL", f"URL_{name.upper()}")
        project.write({f"connectors/{name}.yml": connector,
                       f"pipelines/{name}_trades.yml": f"name: {name}_trades\n"
                                                       f"source: {{connector: {name}, stream: trades}}\n"
                                                       "contract: trade\n"})
        project.env[f"URL_{name.upper()}"] = url
    project.env["SANDBOX_KEY"] = "sandbox-key"
    return project


def _timed_run(project: EtrmflowProject, *args: str) -> float:
    began = time.perf_counter()
    result = project.run("run", *args, "--progress-interval", "0", "pipelines")
    assert result.exit_code == 0, result.output
    return time.perf_counter() - began


def test_two_pipelines_run_faster_side_by_side_and_load_every_record_once(
        tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendors = {name: sandbox_vendor_factory(trades=TRADES, faults=[SLOW]) for name in ("alpha", "beta")}
    urls = {name: vendor.base_url for name, vendor in vendors.items()}
    one_by_one, side_by_side = _project(tmp_path / "seq", urls), _project(tmp_path / "par", urls)

    sequential = _timed_run(one_by_one)
    concurrent = _timed_run(side_by_side, "--threads", "2")

    assert concurrent / sequential < 0.75, (sequential, concurrent)
    expected = expected_trades(vendors["alpha"].config)
    for project in (one_by_one, side_by_side):
        assert [p["name"] for p in project.run_results()["pipelines"]] == ["alpha_trades", "beta_trades"]
        for name in ("alpha", "beta"):
            project.assert_loaded_exactly(expected, table=f"{name}_trades", pipeline=f"{name}_trades")
            counts = project.pipeline_result(f"{name}_trades")["counts"]
            assert (counts["fetched"], counts["valid"] + counts["quarantined"]) == (TRADES, TRADES)


def test_threads_must_be_at_least_one(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("run", "--threads", "0", "pipelines")

    assert result.exit_code == 2
    assert "Invalid value for '--threads': 0 is not in the range x>=1." in result.stderr


def test_side_by_side_pipelines_of_one_connector_list_only_their_own_breaker_transitions(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:path=/api/v2/trades/pages*", SLOW])
    project = etrmflow_project
    project.copy_from(REPO, "contracts")
    project.write({
        "connectors/vendor.yml": sandbox_connector(page_size=10) + (
            "  trades_by_page:\n"
            "    path: /api/v2/trades/pages\n"
            "    params: {page_size: 10}\n"
            "    records: $.data\n"
            "    paginator: {type: page_number, param: page, has_more: $.next_page}\n"
            "defaults:\n"
            "  retry: {max_attempts: 3, backoff: {initial: 0.01s, max: 0.01s}}\n"
            "  breaker: {failure_threshold: 2, cooldown: 60s}\n"),
        "pipelines/healthy.yml": "name: healthy\nsource: {connector: vendor, stream: trades}\ncontract: trade\n",
        "pipelines/failing.yml": "name: failing\nsource: {connector: vendor, stream: trades_by_page}\n"
                                 "contract: trade\nsinks: [{type: sqlite, table: paged}]\n"})
    project.env.update(SANDBOX_URL=vendor.base_url, SANDBOX_KEY="sandbox-key")

    result = project.run("run", "--threads", "2", "--progress-interval", "0", "pipelines")

    assert result.exit_code == 1, result.output  # the failing pipeline fails; the other loads everything
    failing, healthy = project.pipeline_result("failing"), project.pipeline_result("healthy")
    assert [(t["from"], t["to"]) for t in failing["breaker_transitions"]] == [("closed", "open")]
    assert failing["breaker_transitions"][0]["endpoint"].endswith("/api/v2/trades/pages")
    assert healthy["breaker_transitions"] == [] and healthy["status"] == "success"
    project.assert_loaded_exactly(expected_trades(vendor.config), table="healthy", pipeline="healthy")
