"""The ``http`` sink's retried POSTs are counted in run_results.json as ``counts.sink_retries``,
apart from the source's ``counts.retries``, in a run that succeeds and in one that fails."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from etrmflow.cli.schema_command import packaged_schema
from etrmflow.testing import EtrmflowProject, SandboxFactory

from .test_writeback import (
    PATH,
    assert_every_valid_settlement_booked_once,
    keys_in_order,
    post_requests,
    writeback_project,
)


def schema_problems(results: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(packaged_schema("run_results"))
    return sorted(f"{error.json_path}: {error.message}" for error in validator.iter_errors(results))


def posted_attempts(project: EtrmflowProject) -> list[int]:
    """Attempts of every request the audit log says the sink posted."""
    audit = [json.loads(line) for line in project.path("target/audit/audit.jsonl").read_text().splitlines()]
    return [request["attempts"] for entry in audit if entry["event"] == "batch_posted"
            for request in entry["requests"]]


def test_sink_retries_are_counted_apart_from_the_sources(etrmflow_project: EtrmflowProject,
                                                         sandbox_vendor_factory: SandboxFactory) -> None:
    # The 2nd POST is booked and answered 503, the 5th's connection dropped; the 2nd GET answers 503.
    vendor = sandbox_vendor_factory(faults=[f"accept-503:at=2,path={PATH}", f"accept-drop:at=5,path={PATH}",
                                            "503:at=2,path=/api/v2/settlements*"])
    project = writeback_project(etrmflow_project, vendor)

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 0, result.output
    assert_every_valid_settlement_booked_once(vendor)
    assert vendor.stats()["faults_injected"] == {"accept-503": 1, "accept-drop": 1, "503": 1}
    counts = project.pipeline_result()["counts"]
    assert (counts["retries"], counts["sink_retries"]) == (1, 2)
    # The same two, as the vendor and the audit log saw them: POSTs beyond one per booked key.
    assert post_requests(vendor) - len(keys_in_order(vendor)) == 2
    assert sum(attempts - 1 for attempts in posted_attempts(project)) == 2
    assert schema_problems(project.run_results()) == []


def test_a_run_that_a_sinks_retries_could_not_save_counts_them(etrmflow_project: EtrmflowProject,
                                                               sandbox_vendor_factory: SandboxFactory) -> None:
    # POSTs 5 to 8 answer 503: the 5th request is tried 4 times (3 retries) and the run fails.
    vendor = sandbox_vendor_factory(faults=[f"503:at=5,burst=4,path={PATH}"])
    project = writeback_project(etrmflow_project, vendor)

    failed = project.run("run", "pipelines/instructions.yml")

    assert failed.exit_code == 1, failed.output
    pipeline = project.pipeline_result()
    assert (pipeline["error_type"], pipeline["counts"]["retries"], pipeline["counts"]["sink_retries"]) == (
        "SinkError", 0, 3)
    assert schema_problems(project.run_results()) == []
    finished = [json.loads(line) for line in project.path("target/audit/audit.jsonl").read_text().splitlines()
                if '"run_finished"' in line]
    assert finished[-1]["counts"]["sink_retries"] == 3  # the audit log's last word on the run says so too


def test_a_pipeline_without_an_http_sink_counts_no_sink_retries(etrmflow_project: EtrmflowProject,
                                                                sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(faults=["503:at=2,path=/api/v2/settlements*"])
    project = writeback_project(etrmflow_project, vendor)
    pipeline = project.path("pipelines/instructions.yml")
    text = pipeline.read_text()
    pipeline.write_text(text[:text.index("sinks:")] + "sinks:\n  - {type: sqlite, table: settlements}\n")

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 0, result.output
    counts = project.pipeline_result()["counts"]
    assert (counts["retries"], counts["sink_retries"]) == (1, 0)
