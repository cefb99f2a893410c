"""Date windows over real loopback HTTP: a year of settlements split into windows loads every
settlement exactly once, whatever the step; the window bounds matter; a resumed run continues
in the window where the failed one stopped."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from etrmflow.sandbox import ThreadedSandbox
from etrmflow.sandbox.data import settlement_date, settlement_id
from etrmflow.testing import (
    EtrmflowProject,
    ExpectedRecords,
    SandboxFactory,
    expected_settlements,
)

from . import FAST_RETRY, REPO

KEY = "{type: api_key, in: header, name: X-API-Key, value: sandbox-key}"
PIPELINE = """\
name: settlements
source: {connector: vendor, stream: settlements}
contract: settlement
"""


def windowed_project(project: EtrmflowProject, vendor: ThreadedSandbox, *, step: str = "P1M",
                     page_size: int = 100, end_inclusive: bool = False) -> EtrmflowProject:
    inclusive = ", end_inclusive: true" if end_inclusive else ""
    project.write({"pipelines/settlements.yml": PIPELINE, "connectors/vendor.yml": (
        "name: vendor\n"
        "base_url: \"{{ env_var('SANDBOX_URL') }}\"\n"
        f"auth: {KEY}\n"
        f"{FAST_RETRY}"
        "streams:\n"
        "  settlements:\n"
        "    path: /api/v2/settlements\n"
        f"    params: {{start_date: \"{{{{ window.start }}}}\", end_date: \"{{{{ window.end }}}}\", "
        f"page_size: {page_size}}}\n"
        "    records: $.results\n"
        "    paginator: {type: page_number, param: page, total_pages: $.total_pages}\n"
        f"    windows: {{start: 2025-01-01, end: 2026-01-01, step: {step}, tz: Europe/Berlin{inclusive}}}\n")})
    project.copy_from(REPO, "contracts")
    project.env["SANDBOX_URL"] = vendor.base_url
    return project


def run(project: EtrmflowProject, *options: str) -> dict[str, Any]:
    result = project.run("run", *options, "pipelines/settlements.yml")
    assert result.exit_code == 0, result.output
    return project.pipeline_result()


def assert_loaded(project: EtrmflowProject, expected: ExpectedRecords) -> None:
    project.assert_loaded_exactly(expected, table="settlements", pipeline="settlements", id_field="settlement_id")


def pages_per_month(vendor: ThreadedSandbox, page_size: int) -> list[int]:
    """Requests a monthly walk makes per window: one at least, even for an empty month."""
    months = Counter(int(settlement_date(i, vendor.config.seed)[5:7]) for i in range(vendor.config.settlements))
    return [max(1, -(-months[month] // page_size)) for month in range(1, 13)]


def test_monthly_windows_load_every_settlement_of_the_year_once(etrmflow_project: EtrmflowProject,
                                                                sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = windowed_project(etrmflow_project, vendor)

    result = run(project)

    expected = expected_settlements(vendor.config)
    assert (len(expected.valid), len(expected.invalid)) == (115, 5)
    assert_loaded(project, expected)
    assert (result["counts"]["pages"], result["counts"]["fetched"]) == (12, 120)
    assert vendor.stats()["data_requests"] == 12
    # One page per window, and each window's page is its own batch: none replaced another.
    assert project.query("SELECT COUNT(DISTINCT _etrmflow_batch_id) FROM settlements") == [(12,)]


def test_weekly_windows_give_the_same_settlements(etrmflow_project: EtrmflowProject,
                                                  sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = windowed_project(etrmflow_project, vendor, step="P7D")

    result = run(project)

    assert_loaded(project, expected_settlements(vendor.config))
    # 2025 has 52 weeks and a day: 53 windows, the last one [2025-12-31, 2026-01-01).
    assert result["counts"]["pages"] == vendor.stats()["data_requests"] == 53


def test_an_inclusive_end_against_an_exclusive_vendor_misses_each_windows_last_day(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = windowed_project(etrmflow_project, vendor, step="P7D", end_inclusive=True)

    run(project)

    # Each request asks for [start, end - 1 day); the vendor excludes its end_date, so the last
    # day of every window is never asked for. Windows start on Wednesday 2025-01-01: the
    # settlements dated on a Tuesday are lost, valid (5, 7, ...) and broken (18, 68) alike.
    missing = {settlement_id(i) for i in range(vendor.config.settlements)
               if date.fromisoformat(settlement_date(i, vendor.config.seed)).weekday() == 1}
    assert sorted(missing) == [settlement_id(i - 1) for i in (3, 7, 9, 18, 19, 22, 32, 35, 37, 45, 53, 55, 59,
                                                              68, 82, 84, 100, 110, 112)]
    everything = expected_settlements(vendor.config)
    assert_loaded(project, ExpectedRecords(
        valid=everything.valid - missing,
        invalid={key: defect for key, defect in everything.invalid.items() if key not in missing}))


def _table(root: Path) -> list[tuple[Any, ...]]:
    project = EtrmflowProject(root)
    return sorted(project.query("SELECT settlement_id, trade_id, settlement_date, amount, currency, status "
                                "FROM settlements"))


def _letters(root: Path) -> list[tuple[str, str]]:
    return sorted((letter["record"]["settlement_id"], letter["record_sha256"])
                  for letter in EtrmflowProject(root).dead_letters("settlements"))


def test_a_run_failed_in_window_three_resumes_there_and_matches_a_clean_run(
        tmp_path: Path, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    per_month = pages_per_month(vendor, page_size=5)
    assert per_month[:3] == [2, 2, 3]
    # The second page of March (window 3, index 2) fails until the retries run out.
    fault_at = per_month[0] + per_month[1] + 2
    vendor.set_faults([f"503:at={fault_at},burst=10"])
    failed_project = windowed_project(EtrmflowProject(tmp_path / "resumed"), vendor, page_size=5)
    failed_project.write({"etrmflow.yml": "name: resumed\n"})

    failed = failed_project.run("run", "pipelines/settlements.yml")

    assert failed.exit_code == 1, failed.output
    stopped = failed_project.pipeline_result()
    assert stopped["counts"]["pages"] == fault_at - 1
    # Window 2 counts from 0 (March); its templates are rendered again in that window on resume.
    assert stopped["missing"] == ("pages after page 1 of date window 3 (2025-03-01T00:00:00+01:00/2025-04-01T00:00:00+02:00) (next request: GET /api/v2/settlements "
                                  "{'end_date': '{{ window.end }}', 'page': 2, 'page_size': 5, "
                                  "'start_date': '{{ window.start }}'})")
    vendor.reset()
    vendor.set_faults([])

    resumed = run(failed_project, "--resume")

    remaining = per_month[2] - 1 + sum(per_month[3:])
    assert resumed["run_id"] == stopped["run_id"]
    assert resumed["counts"]["pages"] == vendor.stats()["data_requests"] == remaining == 22
    assert not failed_project.path("target/state/settlements.json").exists()
    assert_loaded(failed_project, expected_settlements(vendor.config))

    clean_project = windowed_project(EtrmflowProject(tmp_path / "clean"), vendor, page_size=5)
    clean_project.write({"etrmflow.yml": "name: clean\n"})
    run(clean_project)
    assert _table(tmp_path / "resumed") == _table(tmp_path / "clean")
    assert len(_table(tmp_path / "clean")) == 115
    assert _letters(tmp_path / "resumed") == _letters(tmp_path / "clean")
