"""The Parquet sink's modes against real files: replace (default), append, replace_partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from etrmflow.components import BatchInfo, ContractInfo, SinkContext
from etrmflow.errors import SinkError
from etrmflow.sinks import ParquetSink
from etrmflow.sinks.partitions import replaced_path

PRICES = ContractInfo(name="prices", version="1", primary_key=("area", "day", "hour"), schema={
    "type": "object", "properties": {"area": {"type": "string"}, "day": {"type": "string"},
                                     "hour": {"type": "integer"}, "price": {"type": "number"}}})
OUTPUT = "target/parquet/prices"


def prices(*rows: tuple[str, str, int, float]) -> pd.DataFrame:
    return pd.DataFrame([{"area": a, "day": d, "hour": h, "price": p} for a, d, h, p in rows])


def run(tmp_path: Path, *frames: pd.DataFrame, run_id: str, ok: bool = True, resume: bool = False,
        batch_ids: list[str] | None = None, **options: Any) -> None:
    sink = ParquetSink({"path": OUTPUT, **options})
    sink.open(SinkContext(pipeline="prices", run_id=run_id, contract=PRICES, project_dir=str(tmp_path),
                          target_dir=str(tmp_path / "target"), resume=resume))
    for index, frame in enumerate(frames):
        batch_id = batch_ids[index] if batch_ids else f"{run_id}-b{index}"
        sink.write(frame, BatchInfo(run_id=run_id, batch_id=batch_id, page_sha256="sha", pipeline="prices"))
    sink.close(ok)


def read(tmp_path: Path) -> list[tuple[Any, ...]]:
    table = pq.read_table(tmp_path / OUTPUT).to_pylist()
    return sorted((str(r["area"]), str(r["day"]), r["hour"], r["price"], r["_etrmflow_run_id"]) for r in table)


def folders(tmp_path: Path) -> list[str]:
    root = tmp_path / OUTPUT
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def by_day(**options: Any) -> dict[str, Any]:
    return {"mode": "replace_partition", "partition_by": ["day"], **options}


def test_replace_partition_replaces_the_days_a_run_wrote_and_keeps_the_others(tmp_path: Path) -> None:
    run(tmp_path, prices(("DE", "D1", 1, 10.0), ("DE", "D1", 2, 11.0), ("DE", "D2", 1, 20.0)),
        prices(("DE", "D3", 1, 30.0)), run_id="run-1", **by_day())
    run(tmp_path, prices(("DE", "D1", 1, 12.0), ("DE", "D2", 1, 21.0)), prices(("DE", "D2", 2, 22.0)),
        run_id="run-2", **by_day())

    assert read(tmp_path) == [("DE", "D1", 1, 12.0, "run-2"), ("DE", "D2", 1, 21.0, "run-2"),
                              ("DE", "D2", 2, 22.0, "run-2"), ("DE", "D3", 1, 30.0, "run-1")]
    assert folders(tmp_path) == ["day=D1", "day=D2", "day=D3"]
    assert sorted(p.name for p in (tmp_path / "target/parquet").iterdir()) == ["prices"]  # nothing left aside


def test_replace_partition_on_two_levels_replaces_whole_combinations(tmp_path: Path) -> None:
    options = {"mode": "replace_partition", "partition_by": ["area", "day"]}
    run(tmp_path, prices(("DE", "D1", 1, 10.0), ("FR", "D1", 1, 15.0), ("DE", "D2", 1, 20.0)), run_id="run-1",
        **options)
    run(tmp_path, prices(("DE", "D1", 2, 11.0)), run_id="run-2", **options)

    assert read(tmp_path) == [("DE", "D1", 2, 11.0, "run-2"), ("DE", "D2", 1, 20.0, "run-1"),
                              ("FR", "D1", 1, 15.0, "run-1")]


def test_replace_partition_publishes_nothing_until_the_run_succeeds_and_a_resumed_run_completes_it(
        tmp_path: Path) -> None:
    run(tmp_path, prices(("DE", "D1", 1, 10.0), ("DE", "D2", 1, 20.0)), run_id="run-1", **by_day())
    run(tmp_path, prices(("DE", "D1", 1, 11.0)), run_id="run-2", ok=False, **by_day())
    assert read(tmp_path) == [("DE", "D1", 1, 10.0, "run-1"), ("DE", "D2", 1, 20.0, "run-1")]

    # The resumed run writes the pages it had not finished; the staged D1 is kept.
    run(tmp_path, prices(("DE", "D2", 2, 21.0)), run_id="run-2", resume=True, batch_ids=["run-2-b1"], **by_day())
    assert read(tmp_path) == [("DE", "D1", 1, 11.0, "run-2"), ("DE", "D2", 2, 21.0, "run-2")]


def test_a_partition_set_aside_by_a_crashed_publish_is_put_back(tmp_path: Path) -> None:
    run(tmp_path, prices(("DE", "D1", 1, 10.0), ("DE", "D2", 1, 20.0)), run_id="run-1", **by_day())
    root = tmp_path / OUTPUT
    aside = replaced_path(root, "run-2")
    aside.mkdir()
    (root / "day=D1").rename(aside / "day=D1")  # crashed between moving D1 aside and moving its new one in
    (aside / "day=D2").mkdir()  # ...and D2's replacement had already made it in: its old copy goes
    (aside / "day=D2" / "part-old-0.parquet").write_bytes(b"old")

    run(tmp_path, prices(("DE", "D3", 1, 30.0)), run_id="run-3", **by_day())

    assert read(tmp_path) == [("DE", "D1", 1, 10.0, "run-1"), ("DE", "D2", 1, 20.0, "run-1"),
                              ("DE", "D3", 1, 30.0, "run-3")]
    assert not aside.exists()


def test_replace_partition_refuses_an_output_that_is_not_partitioned_that_way(tmp_path: Path) -> None:
    run(tmp_path, prices(("DE", "D1", 1, 10.0)), run_id="run-1")  # replace, unpartitioned
    with pytest.raises(SinkError, match=r"holds part-run-1-b0\.parquet, which is not a day=\.\.\. partition "
                                        r"folder; .*run once with mode: replace"):
        run(tmp_path, prices(("DE", "D1", 1, 11.0)), run_id="run-2", **by_day())
    assert read(tmp_path) == [("DE", "D1", 1, 10.0, "run-1")]


def test_append_adds_a_runs_parts_and_a_batch_loaded_again_replaces_its_part(tmp_path: Path) -> None:
    run(tmp_path, prices(("DE", "D1", 1, 10.0)), run_id="run-1", mode="append", batch_ids=["page-a"])
    run(tmp_path, prices(("DE", "D1", 1, 10.0)), prices(("DE", "D2", 1, 20.0)), run_id="run-2",
        mode="append", batch_ids=["page-a", "page-b"])
    run(tmp_path, prices(("FR", "D2", 1, 25.0)), run_id="run-3", mode="append", partition_by=["area"],
        batch_ids=["page-c"])

    assert read(tmp_path) == [("DE", "D1", 1, 10.0, "run-2"), ("DE", "D2", 1, 20.0, "run-2"),
                              ("FR", "D2", 1, 25.0, "run-3")]


def test_a_failed_append_run_adds_nothing(tmp_path: Path) -> None:
    run(tmp_path, prices(("DE", "D1", 1, 10.0)), run_id="run-1", mode="append")
    run(tmp_path, prices(("DE", "D2", 1, 20.0)), run_id="run-2", mode="append", ok=False)
    assert read(tmp_path) == [("DE", "D1", 1, 10.0, "run-1")]


def test_describe_names_a_mode_other_than_replace() -> None:
    assert ParquetSink({"path": "p"}).describe() == "parquet p (zstd)"
    assert ParquetSink({"path": "p", **by_day()}).describe() == "parquet p (partitioned by day, replace_partition, zstd)"
