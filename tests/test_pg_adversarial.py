"""The postgres sink under hostile or unlucky conditions, against a real PostgreSQL server:
two runs on one table at once, a resumed replace run, bad cells. Each
test is a way a settlement row could be lost, duplicated or silently altered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from etrmflow.components import BatchInfo, ContractInfo, SinkContext
from etrmflow.errors import SinkError
from etrmflow.secrets import SecretStore
from etrmflow.sinks import PostgresSink
from etrmflow.testing import PostgresDatabase

SECRET = "PG_ADVERSARIAL_PASSWORD"
MONEY = {"type": "number", "x-etrmflow-decimal": {"scale": 2, "precision": 18}}
SETTLEMENTS = ContractInfo(name="settlements", version="1", primary_key=("settlement_id",), schema={
    "type": "object", "properties": {"settlement_id": {"type": "string"}, "day": {"type": "string"},
                                     "amount": MONEY, "note": {"type": "string"}}})
PRICES = ContractInfo(name="prices", version="1", primary_key=(), schema={
    "type": "object", "properties": {"area": {"type": "string"}, "price": {"type": "number"}}})


class Harness:
    def __init__(self, database: PostgresDatabase, tmp_path: Path) -> None:
        self.database = database
        self.tmp_path = tmp_path

    def sink(self, **options: Any) -> PostgresSink:
        dsn = f"postgresql://postgres@127.0.0.1:{self.database.port}/{self.database.dbname}"
        return PostgresSink({"dsn": dsn, "password": f"${{secret:{SECRET}}}", "table": "settlements", **options})

    def context(self, run_id: str, contract: ContractInfo = SETTLEMENTS, resume: bool = False) -> SinkContext:
        return SinkContext(pipeline="settlements", run_id=run_id, contract=contract, project_dir=str(self.tmp_path),
                           target_dir=str(self.tmp_path / "target"), resume=resume,
                           secrets=SecretStore(environ={SECRET: self.database.password}))

    def opened(self, run_id: str, contract: ContractInfo = SETTLEMENTS, **options: Any) -> PostgresSink:
        sink = self.sink(**options)
        sink.open(self.context(run_id, contract))
        return sink

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.database.query(sql)


@pytest.fixture
def pg(postgresql_database: PostgresDatabase, tmp_path: Path) -> Harness:
    return Harness(postgresql_database, tmp_path)


def batch(batch_id: str, run_id: str) -> BatchInfo:
    return BatchInfo(run_id=run_id, batch_id=batch_id, page_sha256=f"sha-{batch_id}", pipeline="settlements")


def settlements(*ids: str, day: str = "D1") -> pd.DataFrame:
    from decimal import Decimal

    return pd.DataFrame([{"settlement_id": i, "day": day, "amount": Decimal("100.00")} for i in ids])


# --- two runs on one table at once ---------------------------------------------------------------

def test_two_replace_runs_at_once_cannot_mix_their_rows(pg: Harness) -> None:
    # Both runs stage into settlements__staging: the second one's open dropped what the first had
    # staged, and the first then published the second's rows as its own.
    first = pg.opened("run-1", mode="replace")
    first.write(settlements("A1", "A2"), batch("b0", "run-1"))
    with pytest.raises(SinkError, match="another run is writing table public.settlements"):
        pg.opened("run-2", mode="replace")
    first.write(settlements("A3"), batch("b1", "run-1"))
    first.close(True)

    assert pg.rows("SELECT settlement_id FROM settlements ORDER BY 1") == [("A1",), ("A2",), ("A3",)]


def test_two_replace_partition_runs_at_once_cannot_delete_each_others_rows(pg: Harness) -> None:
    options = {"mode": "replace_partition", "partition_by": ["day"]}
    first = pg.opened("run-1", **options)
    first.write(settlements("A1", day="D1"), batch("b0", "run-1"))
    with pytest.raises(SinkError, match="another run is writing table public.settlements"):
        pg.opened("run-2", **options)
    first.write(settlements("A2", day="D1"), batch("b1", "run-1"))
    first.close(True)

    assert pg.rows("SELECT settlement_id FROM settlements ORDER BY 1") == [("A1",), ("A2",)]


def test_upserting_runs_may_share_a_table_but_not_with_a_replacing_one(pg: Harness) -> None:
    first, second = pg.opened("run-1"), pg.opened("run-2")  # upserts on one key commute batch by batch
    first.write(settlements("A1"), batch("b0", "run-1"))
    second.write(settlements("B1"), batch("b0", "run-2"))  # its table appeared after it opened
    with pytest.raises(SinkError, match=r"another run is writing table public\.settlements, and mode replace must "
                                        r"have it to itself \(only upsert and append runs may share a table\); "
                                        r"run this one again when that run has finished"):
        pg.opened("run-3", mode="replace")
    first.close(True)
    second.close(True)
    replacing = pg.opened("run-3", mode="replace")  # free again once they closed
    with pytest.raises(SinkError, match=r"a run in mode replace or replace_partition is writing table "
                                        r"public\.settlements, and must have it to itself"):
        pg.opened("run-4", mode="append")
    replacing.write(settlements("C1"), batch("b0", "run-3"))
    replacing.close(True)

    assert pg.rows("SELECT settlement_id FROM settlements ORDER BY 1") == [("C1",)]


# --- cells PostgreSQL cannot store -----------------------------------------------------------------

@pytest.mark.parametrize(("column", "fine", "value"), [("note", "paid", "paid\x00in full"),
                                                    ("legs", [{"memo": "ok"}], [{"memo": "x\x00"}])],
                         ids=["text", "jsonb"])
def test_a_nul_character_fails_the_batch_naming_its_cell_and_the_fix(pg: Harness, column: str, fine: Any,
                                                                      value: Any) -> None:
    sink = pg.opened("run-1")
    sink.write(settlements("A1"), batch("b0", "run-1"))
    rows = settlements("A2", "A3")
    rows[column] = pd.Series([fine, value], dtype=object)
    with pytest.raises(SinkError) as caught:
        sink.write(rows, batch("b1", "run-1"))
    sink.close(False)

    assert str(caught.value) == (
        f"postgres sink (table public.settlements): writing batch b1 failed and was rolled back: column "
        f"{column}, row 2 of the batch (settlement_id A3) holds a NUL character (0x00), which PostgreSQL "
        f"cannot store in text or jsonb; remove it with a step, or refuse such records in the contract "
        f"(pattern: \"^[^\\u0000]*$\") so that they are quarantined and the rest loads")
    assert pg.rows("SELECT settlement_id FROM settlements") == [("A1",)]


def test_a_nul_character_in_a_column_name_is_refused_by_name(pg: Harness) -> None:
    sink = pg.opened("run-1")
    rows = settlements("A1")
    rows["fee\x00x"] = [1]
    with pytest.raises(SinkError, match=r"rolled back: column name\(s\) that PostgreSQL cannot take \(longer than "
                                        r"63 bytes, which it would cut, or holding a NUL character\): 'fee\\x00x'; "
                                        r"rename them with a rename step"):
        sink.write(rows, batch("b0", "run-1"))
    sink.close(False)


# --- a resumed replace run and its staging table ---------------------------------------------------

def resume_replace(pg: Harness, run_id: str, frame: pd.DataFrame) -> None:
    sink = pg.sink(mode="replace")
    sink.open(pg.context(run_id, resume=True))
    sink.write(frame, batch("b1", run_id))
    sink.close(True)


@pytest.mark.parametrize("second_run_ok", [True, False], ids=["replaced the table", "failed too"])
def test_a_resumed_replace_run_refuses_a_staging_table_another_run_began(pg: Harness, second_run_ok: bool) -> None:
    # run-1 staged A1 and A2, then failed. run-2 started over (dropping run-1's staging table),
    # staged B1..B3, and published them or failed too. Resuming run-1 now must not publish
    # a table of its later pages alone: A1 and A2 are gone with the table that held them.
    interrupted = pg.opened("run-1", mode="replace")
    interrupted.write(settlements("A1", "A2"), batch("b0", "run-1"))
    interrupted.close(False)
    other = pg.opened("run-2", mode="replace")
    other.write(settlements("B1", "B2", "B3"), batch("b0", "run-2"))
    other.close(second_run_ok)
    before = pg.rows("SELECT settlement_id FROM settlements ORDER BY 1") if second_run_ok else []

    began = "it is gone" if second_run_ok else "another run began the one there"
    with pytest.raises(SinkError, match=rf"cannot resume run run-1: its staging table public\.settlements__staging "
                                        rf"held what the run loaded, but {began}; run without --resume to load "
                                        rf"everything again \(table public\.settlements stays as it is until a "
                                        rf"run succeeds\)"):
        resume_replace(pg, "run-1", settlements("A3"))

    assert before == ([("B1",), ("B2",), ("B3",)] if second_run_ok else [])
    if second_run_ok:
        assert pg.rows("SELECT settlement_id FROM settlements ORDER BY 1") == before


def test_a_replace_run_that_failed_before_its_first_page_resumes(pg: Harness) -> None:
    pg.opened("run-1", mode="replace").close(False)  # failed before any page was written
    resume_replace(pg, "run-1", settlements("A1"))
    assert pg.rows("SELECT settlement_id FROM settlements") == [("A1",)]
