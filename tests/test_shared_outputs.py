"""Two sinks of one run on one output, from an adversarial pass: refused (exit 2, nothing fetched)
whenever one of them replaces it, however the output is spelled; allowed when neither replaces
it, when the outputs differ, or when only one of the pipelines runs. Real runs over loopback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from etrmflow.testing import EtrmflowProject, ScriptedRequest, ScriptedVendor

CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, day]
  properties:
    deal_id: {type: string}
    day: {type: string}
"""

CONNECTOR = """\
name: vendor
base_url: "{{ env_var('VENDOR_URL') }}"
streams:
  deals:
    path: /deals
    records: $.deals
    paginator: {type: single}
"""

Serve = Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]


def pipeline(name: str, sink: str, extra: str = "") -> str:
    return (f"name: {name}\nsource: {{connector: vendor, stream: deals}}\ncontract: deal\n"
            f"sinks:\n  - {sink}\n{extra}")


def two_pipelines(project: EtrmflowProject, scripted_vendor: Serve, first: str, second: str,
                  extra: str = "") -> EtrmflowProject:
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "D-1", "day": "2024-05-01"}]})
    project.write({"contracts/deal.yml": CONTRACT, "connectors/vendor.yml": CONNECTOR,
                   "pipelines/a.yml": pipeline("a", first, extra), "pipelines/b.yml": pipeline("b", second, extra)})
    project.env["VENDOR_URL"] = vendor.url
    return project


ALLOWED = {
    "two-upserts-one-table": ("{type: sqlite, table: deals, mode: upsert}", "{type: sqlite, table: deals}"),
    "append-and-replace-partition-in-two-folders": (
        "{type: parquet, path: target/p/a, mode: append}",
        "{type: parquet, path: target/p/b, mode: replace_partition, partition_by: [day]}"),
    "one-table-name-in-two-databases": ("{type: sqlite, path: target/a.db, table: deals, mode: replace}",
                                        "{type: sqlite, path: target/b.db, table: deals, mode: replace}"),
    "a-csv-beside-a-parquet-folder": ("{type: csv, path: target/deals.csv}", "{type: parquet, path: target/deals}"),
}


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_sinks_that_do_not_fight_over_an_output_run_side_by_side(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, case: str) -> None:
    project = two_pipelines(etrmflow_project, scripted_vendor, *ALLOWED[case])

    result = project.run("run", "pipelines/a.yml", "pipelines/b.yml")

    assert result.exit_code == 0, result.output


def test_only_the_selected_pipeline_is_compared(etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    project = two_pipelines(etrmflow_project, scripted_vendor, "{type: csv, path: target/deals.csv}",
                            "{type: csv, path: target/deals.csv}")

    assert project.run("run", "pipelines/a.yml", "pipelines/b.yml").exit_code == 2
    result = project.run("run", "--select", "b", "pipelines/a.yml", "pipelines/b.yml")

    assert result.exit_code == 0, result.output
    assert project.pipeline_result("b")["status"] == "success"


SAME_OUTPUT = {
    "dot-slash-and-double-slash": ("{type: csv, path: ./target/deals.csv}", "{type: csv, path: target//deals.csv}"),
    "through-dot-dot": ("{type: csv, path: target/deals.csv}", "{type: csv, path: target/x/../deals.csv}"),
    "absolute-and-relative": ("{type: csv, path: target/deals.csv}", "{type: csv, path: 'ROOT/target/deals.csv'}"),
    "through-a-symlink": ("{type: csv, path: target/deals.csv}", "{type: csv, path: link/deals.csv}"),
    "env-var-templated": ("{type: csv, path: target/deals.csv}",
                          "{type: csv, path: \"{{ env_var('OUT_DIR') }}/deals.csv\"}"),
    "parquet-replace-and-append": ("{type: parquet, path: target/p}", "{type: parquet, path: ./target/p/, mode: append}"),
    "sqlite-default-and-explicit-database": ("{type: sqlite, table: deals, mode: replace}",
                                             "{type: sqlite, path: ./target/etrmflow.db, table: deals}"),
}


@pytest.mark.parametrize("case", sorted(SAME_OUTPUT))
def test_one_output_spelled_two_ways_is_refused_when_a_sink_replaces_it(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, case: str) -> None:
    first, second = (sink.replace("ROOT", str(etrmflow_project.root)) for sink in SAME_OUTPUT[case])
    project = two_pipelines(etrmflow_project, scripted_vendor, first, second)
    project.path("target").mkdir(exist_ok=True)
    os.symlink(project.path("target"), project.path("link"))
    project.env["OUT_DIR"] = "target"

    result = project.run("run", "pipelines/a.yml", "pipelines/b.yml")

    assert result.exit_code == 2, result.output
    assert "pipelines/b.yml" in result.output and "also writes in this run" in result.output
    assert not project.path("target/deals.csv").exists()


def test_a_table_named_in_another_case_is_the_same_sqlite_table(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    project = two_pipelines(etrmflow_project, scripted_vendor, "{type: sqlite, table: deals, mode: replace}",
                            "{type: sqlite, table: DEALS}")

    result = project.run("run", "pipelines/a.yml", "pipelines/b.yml")

    assert result.exit_code == 2, result.output


def test_a_sink_replacing_the_dead_letter_table_is_refused(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    project = two_pipelines(etrmflow_project, scripted_vendor, "{type: sqlite, table: dead_letters, mode: replace}",
                            "{type: sqlite, table: deals}", extra="dead_letter: {type: sqlite}\n")

    result = project.run("run", "pipelines/a.yml", "pipelines/b.yml")

    assert result.exit_code == 2, result.output


def test_a_sink_replacing_another_pipelines_default_dead_letter_file_is_refused(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    # b declares no dead_letter: its letters go to target/dead_letter/b.jsonl, which a's CSV would replace.
    project = two_pipelines(etrmflow_project, scripted_vendor, "{type: csv, path: target/dead_letter/b.jsonl}",
                            "{type: sqlite, table: deals}")

    result = project.run("run", "pipelines/a.yml", "pipelines/b.yml")

    assert result.exit_code == 2, result.output
    assert "pipelines/b.yml" in result.output and "dead_letter/b.jsonl" in result.output
    assert not project.path("target/dead_letter").exists()


def test_default_dead_letters_follow_the_target_folder(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    project = two_pipelines(etrmflow_project, scripted_vendor, "{type: csv, path: elsewhere/dead_letter/b.jsonl}",
                            "{type: sqlite, table: deals}")

    moved = project.run("run", "--target-dir", "elsewhere", "pipelines/a.yml", "pipelines/b.yml")
    kept = project.run("run", "pipelines/a.yml", "pipelines/b.yml")

    assert moved.exit_code == 2 and "dead_letter/b.jsonl" in moved.output, moved.output
    assert kept.exit_code == 0, kept.output
    assert project.path("elsewhere/dead_letter/b.jsonl").is_file()  # a's CSV, beside b's letters in target/
