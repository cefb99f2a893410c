"""The SQLite sink's replace_partition mode, and what a resumed run does to each mode's table:
real SQLite files in tmp_path, written batch by batch as the engine writes them."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from etrmflow.components import BatchInfo, ContractInfo, SinkContext
from etrmflow.errors import SinkError
from etrmflow.sinks import SqliteSink

SETTLEMENTS = ContractInfo(
    name="settlements", version="1", primary_key=("settlement_id",),
    schema={"type": "object", "properties": {
        "settlement_id": {"type": "string"},
        "month": {"type": ["string", "null"]},
        "area": {"type": "string"},
        "amount": {"type": "number", "x-etrmflow-decimal": {"scale": 2, "precision": 18}},
    }},
)
KEYLESS = dataclasses.replace(SETTLEMENTS, primary_key=())


def row(settlement_id: str, month: str | None, amount: str = "10.00", area: str = "DE") -> dict[str, Any]:
    from decimal import Decimal

    return {"settlement_id": settlement_id, "month": month, "area": area, "amount": Decimal(amount)}


def frame(*records: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(records))


class Run:
    """One run of one sink: open, write pages as batches p0, p1, ..., close."""

    def __init__(self, tmp_path: Path, run_id: str, options: dict[str, Any], *, resume: bool = False,
                 contract: ContractInfo = SETTLEMENTS) -> None:
        self.run_id = run_id
        self.sink = SqliteSink({"table": "settlements", **options})
        self.sink.open(SinkContext(pipeline="settlements", run_id=run_id, contract=contract,
                                   project_dir=str(tmp_path), target_dir=str(tmp_path / "target"),
                                   resume=resume))

    def page(self, index: int, *records: dict[str, Any]) -> Run:
        self.sink.write(frame(*records), BatchInfo(run_id=self.run_id, batch_id=f"p{index}",
                                                   page_sha256=f"sha-{index}", pipeline="settlements"))
        return self

    def close(self, ok: bool = True) -> None:
        self.sink.close(ok)


def table(tmp_path: Path, name: str = "settlements") -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "target" / "etrmflow.db") as db:
        return db.execute(f"SELECT settlement_id, month, amount, _etrmflow_run_id FROM {name} "
                          f"ORDER BY settlement_id, _etrmflow_run_id").fetchall()


MONTHLY = {"mode": "replace_partition", "partition_by": ["month"]}


@pytest.mark.parametrize("contract", [SETTLEMENTS, KEYLESS], ids=["keyed", "keyless"])
def test_a_run_replaces_the_partitions_it_loads_and_keeps_the_others(tmp_path: Path,
                                                                      contract: ContractInfo) -> None:
    first = Run(tmp_path, "run-1", MONTHLY, contract=contract)
    first.page(0, row("S1", "2025-01"), row("S2", "2025-01"), row("S3", "2025-02"))
    first.page(1, row("S4", None))
    first.close()
    # The vendor corrected January (S2 is gone, S5 is new) and the month without a date.
    second = Run(tmp_path, "run-2", MONTHLY, contract=contract)
    second.page(0, row("S1", "2025-01", "11.00"))
    second.page(1, row("S5", "2025-01"), row("S6", None))  # a later page of the same partition adds up
    second.close()
    assert table(tmp_path) == [("S1", "2025-01", "11.00", "run-2"), ("S3", "2025-02", "10.00", "run-1"),
                               ("S5", "2025-01", "10.00", "run-2"), ("S6", None, "10.00", "run-2")]


def test_a_rerun_of_the_same_data_leaves_the_same_rows(tmp_path: Path) -> None:
    pages = [[row("S1", "2025-01"), row("S2", "2025-02")], [row("S3", "2025-02")]]
    for run_id in ("run-1", "run-2"):
        run = Run(tmp_path, run_id, MONTHLY)
        for index, records in enumerate(pages):
            run.page(index, *records)
        run.close()
        assert [r[:3] for r in table(tmp_path)] == [("S1", "2025-01", "10.00"), ("S2", "2025-02", "10.00"),
                                                   ("S3", "2025-02", "10.00")]
        assert {r[3] for r in table(tmp_path)} == {run_id}


@pytest.mark.parametrize("contract", [SETTLEMENTS, KEYLESS], ids=["keyed", "keyless"])
def test_a_resumed_run_finishes_its_partitions_without_doubling_the_page_in_flight(
        tmp_path: Path, contract: ContractInfo) -> None:
    Run(tmp_path, "run-0", MONTHLY, contract=contract).page(0, row("S0", "2025-01"), row("S9", "2025-03")).close()
    failed = Run(tmp_path, "run-1", MONTHLY, contract=contract)
    failed.page(0, row("S1", "2025-01"))
    failed.page(1, row("S2", "2025-01"))  # written, but the run died before its checkpoint
    failed.close(ok=False)
    resumed = Run(tmp_path, "run-1", MONTHLY, resume=True, contract=contract)  # --resume keeps the run id
    resumed.page(1, row("S2", "2025-01"))
    resumed.page(2, row("S3", "2025-02"))
    resumed.close()
    assert table(tmp_path) == [("S1", "2025-01", "10.00", "run-1"), ("S2", "2025-01", "10.00", "run-1"),
                               ("S3", "2025-02", "10.00", "run-1"), ("S9", "2025-03", "10.00", "run-0")]


def test_partitions_of_several_columns_and_the_index_that_serves_them(tmp_path: Path) -> None:
    options = {"mode": "replace_partition", "partition_by": ["area", "month"]}
    Run(tmp_path, "run-1", options).page(0, row("S1", "2025-01", area="DE"), row("S2", "2025-01", area="FR")).close()
    run = Run(tmp_path, "run-2", options)
    assert run.sink.describe() == ("sqlite target/etrmflow.db table settlements "
                                   "(replace_partition on settlement_id, partitions area, month)")
    run.page(0, row("S3", "2025-01", area="DE")).close()
    assert [r[0] for r in table(tmp_path)] == ["S2", "S3"]
    with sqlite3.connect(tmp_path / "target" / "etrmflow.db") as db:
        plan = " ".join(str(r) for r in db.execute(
            "EXPLAIN QUERY PLAN DELETE FROM settlements WHERE area IS 'DE' AND month IS '2025-01'"))
    assert "settlements_partition" in plan


def test_a_partition_column_the_batch_and_contract_lack_fails_the_batch(tmp_path: Path) -> None:
    run = Run(tmp_path, "run-1", {"mode": "replace_partition", "partition_by": ["delivery_day"]})
    with pytest.raises(SinkError, match=r"partition column\(s\) delivery_day are neither in the table"):
        run.page(0, row("S1", "2025-01"))
    run.close(ok=False)


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "replace_partition"}, "mode replace_partition needs partition_by"),
    ({"mode": "upsert", "partition_by": ["month"]}, "partition_by is only used by mode replace_partition"),
])
def test_partition_options_that_do_not_go_together_fail_at_open(tmp_path: Path, options: dict[str, Any],
                                                                 message: str) -> None:
    with pytest.raises(SinkError, match=message):
        Run(tmp_path, "run-1", options)


@pytest.mark.parametrize("mode", ["append", "replace"])
def test_a_resumed_keyless_run_writes_the_page_in_flight_once(tmp_path: Path, mode: str) -> None:
    failed = Run(tmp_path, "run-1", {"mode": mode}, contract=KEYLESS)
    failed.page(0, row("S1", "2025-01"))
    failed.page(1, row("S2", "2025-01"))  # written, but the run died before its checkpoint
    failed.close(ok=False)
    resumed = Run(tmp_path, "run-1", {"mode": mode}, resume=True, contract=KEYLESS)
    resumed.page(1, row("S2", "2025-01"))
    resumed.page(2, row("S3", "2025-01"))
    resumed.close()
    assert [r[0] for r in table(tmp_path)] == ["S1", "S2", "S3"]


def test_a_fresh_replace_run_drops_what_a_failed_one_staged(tmp_path: Path) -> None:
    Run(tmp_path, "run-1", {"mode": "replace"}).page(0, row("S1", "2025-01")).close(ok=False)
    Run(tmp_path, "run-2", {"mode": "replace"}).page(0, row("S2", "2025-01")).close()
    assert [r[0] for r in table(tmp_path)] == ["S2"]


def test_a_resume_refuses_a_staging_table_that_another_run_left(tmp_path: Path) -> None:
    Run(tmp_path, "run-0", {"mode": "replace"}).page(0, row("S0", "2024-12")).close()
    failed = Run(tmp_path, "run-1", {"mode": "replace"})
    failed.page(0, row("S1", "2025-01")).close(ok=False)
    # A fresh run starts over (dropping run-1's staging) and dies before its first page, so
    # the checkpoint still names run-1: resuming it on run-2's empty staging would publish
    # pages 1.. alone.
    Run(tmp_path, "run-2", {"mode": "replace"}).close(ok=False)
    with pytest.raises(SinkError, match="run-1.*without --resume"):
        Run(tmp_path, "run-1", {"mode": "replace"}, resume=True)
    assert [r[0] for r in table(tmp_path)] == ["S0"]  # the published table is untouched


def test_a_resume_refuses_when_the_staging_table_is_gone(tmp_path: Path) -> None:
    Run(tmp_path, "run-1", {"mode": "replace"}).page(0, row("S1", "2025-01")).close(ok=False)
    with sqlite3.connect(tmp_path / "target" / "etrmflow.db") as db:
        db.execute("DROP TABLE settlements__staging")
    with pytest.raises(SinkError, match="without --resume"):
        Run(tmp_path, "run-1", {"mode": "replace"}, resume=True)
