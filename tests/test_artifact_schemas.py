"""target/plan.json and target/run_results.json match their published schemas, and
``etrmflow schema`` hands out exactly the packaged schemas."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from etrmflow.cli.schema_command import SCHEMA_RESOURCES, packaged_schema
from etrmflow.plan import PLAN_SCHEMA, PLAN_VERSION
from etrmflow.results import RESULTS_SCHEMA, RESULTS_VERSION
from etrmflow.testing import EtrmflowProject, SandboxFactory

REPO = Path(__file__).resolve().parents[1]
SLOW_BACKOFF = "backoff: {initial: 0.5s, max: 30s, jitter: full}"
FAST_BACKOFF = "backoff: {initial: 0.01s, max: 0.02s, jitter: none}"


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(packaged_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(name: str, artifact: Any) -> list[str]:
    """Every schema error of ``artifact``, as ``json_path: message``."""
    return sorted(f"{error.json_path}: {error.message}" for error in validator(name).iter_errors(artifact))


def example_project(root: Path) -> EtrmflowProject:
    """A copy of the example project whose retries wait milliseconds, not seconds."""
    root.mkdir(parents=True)
    project = EtrmflowProject(root, env={"ACME_BASE_URL": None, "ACME_CLIENT_SECRET": None})
    project.copy_from(REPO, "etrmflow.yml", "connectors", "contracts", "pipelines")
    connector = project.path("connectors/acme_etrm.yml")
    text = connector.read_text(encoding="utf-8")
    assert SLOW_BACKOFF in text  # else the example changed and this test would run slowly
    connector.write_text(text.replace(SLOW_BACKOFF, FAST_BACKOFF), encoding="utf-8")
    return project


def assert_artifacts_valid(project: EtrmflowProject) -> None:
    assert problems("plan", project.plan()) == []
    assert problems("run_results", project.run_results()) == []


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """plan.json and run_results.json of a successful run of the example pipeline."""
    project = example_project(tmp_path_factory.mktemp("good") / "project")
    result = project.run("run", "pipelines/acme_trades.yml")
    assert result.exit_code == 0, result.output
    return project.plan(), project.run_results()


# --- real runs --------------------------------------------------------------------------------

def test_a_successful_run_writes_valid_artifacts(good_run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    plan, results = good_run
    assert problems("plan", plan) == []
    assert problems("run_results", results) == []
    assert (plan["$schema"], plan["plan_version"]) == (PLAN_SCHEMA, 1)
    pipeline = results["pipelines"][0]
    assert (pipeline["status"], pipeline["counts"]["fetched"], pipeline["counts"]["quarantined"]) == ("success", 250, 12)


def test_a_failed_run_writes_valid_artifacts(tmp_path: Path) -> None:
    project = example_project(tmp_path / "project")

    result = project.run("run", "pipelines/acme_trades.yml", env={"ACME_BASE_URL": "sandbox://acme?fault=503:every=1"})

    assert result.exit_code == 1, result.output
    assert_artifacts_valid(project)
    pipeline = project.pipeline_result()
    assert (pipeline["status"], pipeline["error_type"], pipeline["exit_code"]) == ("failed", "RetriesExhausted", 1)
    assert [(t["from"], t["to"]) for t in pipeline["breaker_transitions"]] == [("closed", "open")]


def test_a_resumed_run_writes_valid_artifacts(tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(faults=["503:at=2,burst=20"])
    project = example_project(tmp_path / "project")
    project.env["ACME_BASE_URL"] = vendor.base_url
    failed = project.run("run", "pipelines/acme_trades.yml")
    assert failed.exit_code == 1, failed.output
    assert_artifacts_valid(project)
    assert project.pipeline_result()["missing"].startswith("pages after page 1")
    vendor.set_faults([])

    resumed = project.run("run", "--resume", "pipelines/acme_trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert_artifacts_valid(project)
    assert project.pipeline_result()["resumed_from_page"] == 1


# --- the schemas are not vacuous --------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _parent(artifact: dict[str, Any], path: str) -> tuple[Any, str]:
    """The container holding the last step of a ``a/0/b`` path, and that step."""
    *parents, last = path.split("/")
    target: Any = artifact
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    return target, last


def _set(path: str, value: Any) -> Mutation:
    def mutate(artifact: dict[str, Any]) -> None:
        target, key = _parent(artifact, path)
        target[key] = value
    return mutate


def _delete(path: str) -> Mutation:
    def mutate(artifact: dict[str, Any]) -> None:
        target, key = _parent(artifact, path)
        del target[key]
    return mutate


RESULTS_MUTATIONS = {
    "missing top-level key": (_delete("exit_code"), "$: 'exit_code' is a required property"),
    "missing count": (_delete("pipelines/0/counts/pages"), "$.pipelines[0].counts: 'pages' is a required property"),
    "count as a string": (_set("pipelines/0/counts/fetched", "250"), "$.pipelines[0].counts.fetched: '250' is not of type 'integer'"),
    "negative count": (_set("pipelines/0/counts/written", -1), "$.pipelines[0].counts.written: -1 is less than the minimum of 0"),
    "unknown status": (_set("pipelines/0/status", "ok"), "$.pipelines[0].status: 'ok' is not one of ['success', 'failed', 'skipped']"),
    "unknown key": (_set("pipelines/0/counts/rows", 1), "$.pipelines[0].counts: Additional properties are not allowed ('rows' was unexpected)"),
    "other version": (_set("results_version", 2), "$.results_version: 1 was expected"),
    "bad breaker state": (_set("pipelines/0/breaker_transitions", [{"endpoint": "GET x", "from": "closed", "to": "ajar", "reason": "r"}]),
                          "$.pipelines[0].breaker_transitions[0].to: 'ajar' is not one of ['closed', 'open', 'half_open']"),
    "success with an error": (_set("pipelines/0/error", "boom"), "$.pipelines[0].error: 'boom' is not of type 'null'"),
}

PLAN_MUTATIONS = {
    "missing plan_version": (_delete("plan_version"), "$: 'plan_version' is a required property"),
    "attempts as a string": (_set("pipelines/0/stream/retry/max_attempts", "5"),
                             "$.pipelines[0].stream.retry.max_attempts: '5' is not of type 'integer'"),
    "unknown on_invalid action": (_set("pipelines/0/on_invalid/action", "drop"),
                                  "$.pipelines[0].on_invalid.action: 'drop' is not one of ['quarantine', 'fail']"),
    "component without options": (_delete("pipelines/0/dead_letter/options"),
                                  "$.pipelines[0].dead_letter: 'options' is a required property"),
}


@pytest.mark.parametrize("mutation", sorted(RESULTS_MUTATIONS))
def test_a_broken_run_results_is_rejected(good_run: tuple[dict[str, Any], dict[str, Any]], mutation: str) -> None:
    results = copy.deepcopy(good_run[1])
    mutate, expected = RESULTS_MUTATIONS[mutation]
    mutate(results)
    assert problems("run_results", results) == [expected]


@pytest.mark.parametrize("mutation", sorted(PLAN_MUTATIONS))
def test_a_broken_plan_is_rejected(good_run: tuple[dict[str, Any], dict[str, Any]], mutation: str) -> None:
    plan = copy.deepcopy(good_run[0])
    mutate, expected = PLAN_MUTATIONS[mutation]
    mutate(plan)
    assert problems("plan", plan) == [expected]


def test_schema_ids_match_what_the_artifacts_declare() -> None:
    plan, results = packaged_schema("plan"), packaged_schema("run_results")
    assert plan["$id"] == plan["properties"]["$schema"]["const"] == PLAN_SCHEMA
    assert plan["properties"]["plan_version"] == {"const": PLAN_VERSION}
    assert results["$id"] == results["properties"]["$schema"]["const"] == RESULTS_SCHEMA
    assert results["properties"]["results_version"] == {"const": RESULTS_VERSION}


# --- etrmflow schema --------------------------------------------------------------------------

def test_schema_prints_one_schema(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("schema", "run_results")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == packaged_schema("run_results")


def test_schema_output_writes_every_schema(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("schema", "--output", "schemas")

    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in etrmflow_project.files("schemas"))
    assert written == sorted(f"{name}.schema.json" for name in SCHEMA_RESOURCES)
    for name in SCHEMA_RESOURCES:
        schema = etrmflow_project.read_json(f"schemas/{name}.schema.json")
        Draft202012Validator.check_schema(schema)
        assert schema == packaged_schema(name)


def test_schema_output_with_a_name_writes_that_one(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("schema", "pipeline", "--output", "schemas")
    assert result.exit_code == 0, result.output
    assert [p.name for p in etrmflow_project.files("schemas")] == ["pipeline.schema.json"]


def test_schema_without_a_name_or_output_is_a_usage_error(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("schema")
    assert result.exit_code == 2
    assert ("Error: give a schema name (connector, contract, pipeline, project, plan, run_results) "
            "or --output DIR") in result.stderr


@pytest.mark.parametrize(("name", "document"), [("connector", "connectors/acme_etrm.yml"),
                                                ("pipeline", "pipelines/acme_trades.yml"),
                                                ("project", "etrmflow.yml")])
def test_exported_document_schemas_accept_the_example_project(name: str, document: str) -> None:
    """What an editor checks with: the example files must not be flagged."""
    data = yaml.safe_load((REPO / document).read_text(encoding="utf-8"))
    assert problems(name, data) == []
