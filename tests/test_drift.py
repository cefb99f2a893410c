"""Schema drift: undeclared fields are counted per run, valid records or not, and reported."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from etrmflow.cli.summary import describe_results
from etrmflow.engine.drift import DriftCounter
from etrmflow.results import PipelineResult, RunResults
from etrmflow.sandbox.data import trade
from etrmflow.testing import EtrmflowProject, SandboxFactory, sandbox_connector

REPO = Path(__file__).resolve().parents[1]
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"trade_id": {}, "price": {}},
                          "patternProperties": {"^x_": {}}}


def test_undeclared_fields_are_counted_per_record() -> None:
    records = [{"trade_id": "T1", "price": 1, "notional": 2}, {"trade_id": "T2", "notional": 3, "book": "A"},
               {"trade_id": "T3"}, {"x_internal": 1, "book": None}, ["not", "an", "object"], "text", None]

    assert DriftCounter(SCHEMA).count(records) == {"notional": 2, "book": 2}


def test_a_schema_that_declares_no_properties_has_no_drift() -> None:
    assert DriftCounter({"type": "object"}).count([{"anything": 1}]) == {}
    assert DriftCounter({"type": "object", "properties": {}}).count([{"anything": 1}]) == {"anything": 1}


def test_counting_a_page_of_1000_without_drift_is_cheap() -> None:
    counter = DriftCounter({"properties": {f"f{i}": {} for i in range(15)}})
    page = [{f"f{i}": i for i in range(15)} for _ in range(1000)]
    started = time.perf_counter()
    assert counter.count(page) == {}
    assert time.perf_counter() - started < 0.005


def test_the_summary_shows_one_line_most_frequent_first() -> None:
    result = PipelineResult(name="trades", run_id="r1", drift={"b_field": 3, "notional": 12, "a_field": 3})
    text = describe_results(RunResults(run_id="r1", etrmflow_version="0", started_at="", pipelines=[result]))
    assert text.splitlines()[1] == "       schema drift: notional (12), a_field (3), b_field (3)"


CONNECTOR = sandbox_connector(page_size=20)
PIPELINE = "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: narrow\n"


def narrow_contract(additional: bool) -> str:
    """The trade contract without the notional and legs fields (and the rules that read them)."""
    contract = yaml.safe_load((REPO / "contracts" / "trade.yml").read_text(encoding="utf-8"))
    schema = contract["schema"]
    for name in ("notional", "legs"):
        del schema["properties"][name]
    schema["required"] = [name for name in schema["required"] if name != "notional"]
    schema["additionalProperties"] = additional
    schema.pop("$defs")
    return yaml.safe_dump({"name": "narrow", "version": "1", "primary_key": contract["primary_key"],
                           "schema": schema, "rules": contract["rules"][:1]}, sort_keys=False)


@pytest.mark.parametrize("additional", [True, False], ids=["extra-fields-allowed", "extra-fields-rejected"])
def test_a_run_reports_drift_whether_or_not_the_records_are_quarantined(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory, additional: bool) -> None:
    vendor = sandbox_vendor_factory(trades=60)
    project = etrmflow_project
    project.write({"connectors/vendor.yml": CONNECTOR, "pipelines/trades.yml": PIPELINE,
                   "contracts/narrow.yml": narrow_contract(additional)})
    project.env.update(SANDBOX_URL=vendor.base_url, SANDBOX_KEY="sandbox-key")
    records = [trade(i, vendor.config.seed) for i in range(60)]
    expected = Counter(name for record in records for name in ("notional", "legs") if name in record)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    pipeline = project.pipeline_result()
    assert pipeline["drift"] == dict(expected) and expected["notional"] == 60 and expected["legs"] == 9
    assert "       schema drift: notional (60), legs (9)\n" in result.stdout
    warnings = re.findall(r"WARNING schema drift in trades: field '(\w+)' is not declared", result.stderr)
    assert sorted(warnings) == ["legs", "notional"]  # once per field, not once per page
    assert pipeline["counts"]["quarantined"] == (3 if additional else 60)
