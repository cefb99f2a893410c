"""`--select` picks pipelines by name or `tag:NAME`; without PIPELINES, the project's pipelines/."""

from __future__ import annotations

from pathlib import Path

import pytest

from etrmflow.testing import EtrmflowProject

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(etrmflow_project: EtrmflowProject) -> EtrmflowProject:
    etrmflow_project.copy_from(REPO, "connectors", "contracts", "pipelines")
    etrmflow_project.write({"pipelines/acme_settlements.yml": """
        name: acme_settlements
        tags: [settlements]
        source: {connector: acme_etrm, stream: settlements}
        contract: settlement
    """})
    return etrmflow_project


def test_no_selector_and_no_path_takes_every_pipeline_of_the_project(project: EtrmflowProject) -> None:
    result = project.run("validate")

    assert result.exit_code == 0, result.output
    assert result.stdout == ("4 pipeline(s) valid: acme_hourly_positions, acme_settlement_instructions, "
                             "acme_settlements, acme_trades\n")


def test_select_by_name(project: EtrmflowProject) -> None:
    result = project.run("validate", "--select", "acme_trades")

    assert result.exit_code == 0, result.output
    assert result.stdout == "1 pipeline(s) valid: acme_trades\n"


def test_select_by_tag_applies_to_the_given_folder(project: EtrmflowProject) -> None:
    result = project.run("compile", "--select", "tag:settlements", "pipelines/")

    assert result.exit_code == 0, result.output
    assert [p["name"] for p in project.plan()["pipelines"]] == ["acme_settlement_instructions", "acme_settlements"]


def test_selectors_add_up(project: EtrmflowProject) -> None:
    result = project.run("validate", "--select", "tag:trades", "--select", "acme_settlements", "pipelines")

    assert result.exit_code == 0, result.output
    assert result.stdout == "2 pipeline(s) valid: acme_settlements, acme_trades\n"


def test_an_unselected_broken_pipeline_is_not_loaded(project: EtrmflowProject) -> None:
    project.write({"pipelines/broken.yml": "name: broken\nsource: {connector: nope, stream: x}\ncontract: trade\n"})

    assert project.run("validate").exit_code == 2
    result = project.run("validate", "--select", "tag:example")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("3 pipeline(s) valid: acme_hourly_positions, acme_settlement_instructions, "
                             "acme_trades\n")


def test_a_selector_that_matches_nothing_is_a_usage_error(project: EtrmflowProject) -> None:
    result = project.run("run", "--select", "acme_trade", "--select", "tag:trades")

    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: --select 'acme_trade' matches no pipeline (did you mean 'acme_trades'?)\n")
    assert not project.path("target/run_results.json").exists()
