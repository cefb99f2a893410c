"""Staging for whole-dataset steps: values and dtypes come back unchanged, chunks are cut only
between groups and never exceed their bound, a resumed run keeps exactly what was committed."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from etrmflow.components import BatchInfo
from etrmflow.engine.stages import StepChain, apply_steps
from etrmflow.engine.staging import StagingPlace, StagingStore
from etrmflow.engine.staging_codec import StagingError, key_rows, sql_order
from etrmflow.engine.staging_read import read_chunks
from etrmflow.errors import TransformError
from etrmflow.steps.dataset import DatasetStep
from etrmflow.steps.dedupe import Dedupe

D = decimal.Decimal
BERLIN = "Europe/Berlin"


def place(folder: Path, *, run_id: str = "run1", resume: bool = False) -> StagingPlace:
    return StagingPlace(folder=folder, pipeline="trades", run_id=run_id, resume=resume,
                        checkpoint=folder / "trades.json")


def round_trip(folder: Path, frames: list[pd.DataFrame], key: list[str] | None = None,
               chunk_rows: int = 10_000) -> list[pd.DataFrame]:
    store = StagingStore(place(folder))
    try:
        for number, frame in enumerate(frames):
            store.stage(0, f"b{number}", frame, key or [])
        return [chunk.frame for chunk in read_chunks(store, 0, len(key or []), chunk_rows)]
    finally:
        store.close()


def cells(series: pd.Series) -> list[str]:
    """Every value with its type and exact text: None, NaN, NA and Decimal('40.5') differ here."""
    return [f"{type(v).__name__}:{v!r}" for v in series.tolist()]


# --- values and dtypes -----------------------------------------------------------------------

COLUMNS: dict[str, Any] = {
    "int64": pd.Series([1, -2, 2**62], dtype="int64"),
    "int32": pd.Series([1, -2, 3], dtype="int32"),
    "uint64_huge": pd.Series([1, 2**64 - 1, 3], dtype="uint64"),
    "bool": pd.Series([True, False, True]),
    "float64": pd.Series([1.5, np.nan, -0.1]),
    "float32": pd.Series([1.1, np.nan, 3.3], dtype="float32"),
    "float_inf": pd.Series([np.inf, -np.inf, 0.0]),
    "Int64": pd.Series([1, None, 3], dtype="Int64"),
    "boolean": pd.Series([True, None, False], dtype="boolean"),
    "Float64": pd.Series([1.25, None, 2.5], dtype="Float64"),
    "str": pd.Series(["a", None, "ü€"]),
    "string_na": pd.Series(["a", None, "c"], dtype=pd.StringDtype("python")),
    "object_str_none": pd.Series(["a", None, "c"], dtype=object),
    "decimal": pd.Series([D("40.50"), None, D("1E+2")], dtype=object),
    "decimal_nan_missing": pd.Series([D("-0.00"), np.nan, D("123456789012345678.12")], dtype=object),
    "timestamp_berlin": pd.Series(pd.to_datetime(["2025-03-30T00:00:00+01:00", None, "2025-10-26T02:30:00+01:00"],
                                                 utc=True, format="ISO8601")).dt.tz_convert(BERLIN),
    "timestamp_ns_naive": pd.Series(pd.to_datetime(["2025-01-01 00:00:00.000000001", None, "2262-04-11 00:00:00.0"])).astype(
        "datetime64[ns]"),
    "timestamp_fixed_offset": pd.Series([pd.Timestamp("2025-01-01T00:00+01:00")] * 3),
    "timedelta": pd.Series(pd.to_timedelta([1, None, 3600], unit="s")),
    "category": pd.Series(["DE", "NL", None], dtype=pd.CategoricalDtype(["NL", "DE", "FR"], ordered=True)),
    "nested": pd.Series([[{"leg_id": "L1", "price": D("1.50")}], {"$etrmflow:decimal": "not a tag"}, None],
                        dtype=object),
    "mixed_object": pd.Series([1, "x", dt.date(2025, 3, 30)], dtype=object),
    "missing_markers": pd.Series([None, np.nan, pd.NaT], dtype=object),
    "tuples_and_numpy": pd.Series([(1, "a"), np.int32(7), pd.Timestamp("2025-03-30T01:00", tz=BERLIN)], dtype=object),
}


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_each_dtype_comes_back_with_its_values(tmp_path: Path, name: str) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], name: COLUMNS[name]})

    (back,) = round_trip(tmp_path, [frame])

    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back[name].dtype == frame[name].dtype
    assert cells(back[name]) == cells(frame[name])


def test_a_decimal_keeps_its_exponent_and_sign(tmp_path: Path) -> None:
    frame = pd.DataFrame({"price": pd.Series([D("40.50"), D("1E+2"), D("-0.00")], dtype=object)})
    (back,) = round_trip(tmp_path, [frame])
    assert [v.as_tuple() for v in back["price"]] == [v.as_tuple() for v in frame["price"]]


def test_a_dtype_that_cannot_be_staged_fails_with_the_fix(tmp_path: Path) -> None:
    frame = pd.DataFrame({"month": pd.period_range("2025-01", periods=2, freq="M")})
    with pytest.raises(StagingError, match=r"cannot store dtype period\[M\]; cast the column"):
        round_trip(tmp_path, [frame])


def test_batches_with_other_columns_read_back_as_their_concatenation(tmp_path: Path) -> None:
    first = pd.DataFrame({"k": [1, 3], "legs": [[1], [2]], "cat": pd.Series(["a", "b"], dtype="category")})
    second = pd.DataFrame({"k": [2], "cat": pd.Series(["c"], dtype="category"), "extra": [1.5]})

    (back,) = round_trip(tmp_path, [first, second], key=["k"])

    assert back["k"].tolist() == [1, 2, 3]
    assert back["legs"].tolist()[0] == [1] and pd.isna(back["legs"].tolist()[1])
    assert back["cat"].dtype == "category" and list(back["cat"].cat.categories) == ["a", "b", "c"]
    assert back["cat"].tolist() == ["a", "c", "b"]
    assert back["extra"].tolist()[1] == 1.5


def test_staging_a_batch_again_replaces_it(tmp_path: Path) -> None:
    store = StagingStore(place(tmp_path))
    store.stage(0, "b1", pd.DataFrame({"k": [1, 2]}), ["k"])
    store.stage(0, "b2", pd.DataFrame({"k": [3]}), ["k"])
    store.stage(0, "b1", pd.DataFrame({"k": [9]}), ["k"])  # the same page, processed twice

    frames = [chunk.frame for chunk in read_chunks(store, 0, 1, 100)]
    store.close()

    assert pd.concat(frames)["k"].tolist() == [3, 9]


# --- key order and chunks ----------------------------------------------------------------------

def test_keys_sort_naturally_nulls_first_and_group_equal_values(tmp_path: Path) -> None:
    frame = pd.DataFrame({"k": pd.Series([10, None, 2, D("2.0"), 0.1, D("0.1"), "b", "a"], dtype=object),
                          "n": range(8)})

    (back,) = round_trip(tmp_path, [frame], key=["k"])

    # 2 and Decimal 2.0 are one group; Decimal 0.1 and the float 0.1 differ, as in Python
    assert back["n"].tolist() == [1, 4, 5, 2, 3, 0, 7, 6]
    keys = key_rows(back, ["k"])
    assert keys[3] == keys[4] and keys[1] != keys[2]
    assert sorted(keys, key=sql_order) == keys  # Python's order of staged keys is SQLite's


def test_timestamps_group_by_instant_whatever_their_zone(tmp_path: Path) -> None:
    utc = pd.DataFrame({"at": pd.to_datetime(["2025-03-30T01:00:00Z", "2025-03-30T00:00:00Z"], utc=True), "n": [1, 2]})
    berlin = pd.DataFrame({"at": pd.to_datetime(["2025-03-30T03:00:00+02:00"], utc=True).tz_convert(BERLIN), "n": [3]})

    (back,) = round_trip(tmp_path, [utc, berlin], key=["at"])

    assert back["n"].tolist() == [2, 1, 3]
    assert key_rows(back, ["at"])[1] == key_rows(back, ["at"])[2]


def _pages(groups: int, seed: int) -> tuple[list[pd.DataFrame], dict[int, list[int]]]:
    """Rows of ``groups`` keys (1 to 7 rows each) shuffled over pages; each key's rows in arrival order."""
    rng = random.Random(seed)
    rows = [(key, 0) for key in range(groups) for _ in range(rng.randint(1, 7))]
    rng.shuffle(rows)
    arrival: dict[int, list[int]] = {}
    for position, (key, _) in enumerate(rows):
        arrival.setdefault(key, []).append(position)
    pages = [pd.DataFrame({"key": [k for k, _ in rows[i:i + 37]], "position": range(i, min(i + 37, len(rows)))})
             for i in range(0, len(rows), 37)]
    return pages, arrival


def test_chunks_hold_whole_groups_in_key_order_within_the_bound(tmp_path: Path) -> None:
    pages, arrival = _pages(300, seed=11)

    chunks = round_trip(tmp_path, pages, key=["key"], chunk_rows=50)

    assert all(len(chunk) <= 50 for chunk in chunks) and len(chunks) > 10
    owners = {}
    for number, chunk in enumerate(chunks):
        for key in chunk["key"].unique():
            assert owners.setdefault(key, number) == number, f"group {key} spans two chunks"
    everything = pd.concat(chunks, ignore_index=True)
    assert everything["key"].is_monotonic_increasing
    for key, rows in everything.groupby("key"):
        assert rows["position"].tolist() == arrival[key]  # a group keeps its arrival order


def test_a_group_bigger_than_the_bound_is_a_chunk_of_its_own(tmp_path: Path) -> None:
    frame = pd.DataFrame({"key": [1, 2, 2, 2, 2, 2, 3, 4]})

    chunks = round_trip(tmp_path, [frame], key=["key"], chunk_rows=3)

    assert [chunk["key"].tolist() for chunk in chunks] == [[1], [2, 2, 2, 2, 2], [3, 4]]


class ChunkSizes(DatasetStep):
    """A whole-dataset step that only records the size of each chunk it is handed."""

    type_name = "chunk_sizes"

    def __init__(self, key: list[str], rows: int) -> None:
        super().__init__({"chunk_rows": rows})
        self.key, self.sizes = key, []

    def group_key(self) -> list[str]:
        return self.key

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.sizes.append(len(frame))
        return frame.iloc[:0]


def test_memory_is_bounded_by_the_chunk_not_by_the_run(tmp_path: Path) -> None:
    step = ChunkSizes(["trade_id"], rows=2_000)
    chain = StepChain([step], staging=place(tmp_path))
    chain.open()
    for page in range(120):  # 120,000 staged rows, 1,000 per page
        frame = pd.DataFrame({"trade_id": [f"T{(page * 7919 + i) % 60_000:06d}" for i in range(1_000)],
                              "price": np.arange(1_000, dtype="float64")})
        assert list(chain.apply(frame, BatchInfo(run_id="r", batch_id=f"p{page}", page_sha256="", pipeline="t"))) == []

    assert list(chain.finish()) == []  # empty outputs are not written
    chain.close()

    assert sum(step.sizes) == 120_000
    assert max(step.sizes) <= 2_000 and len(step.sizes) >= 60


# --- the chain ---------------------------------------------------------------------------------

def _batches(tmp_path: Path, pages: list[pd.DataFrame], name: str) -> list[tuple[str, list[Any]]]:
    chain = StepChain([Dedupe({"key": ["trade_id"], "order_by": ["version"], "chunk_rows": 2})],
                      staging=place(tmp_path / name))
    chain.open()
    for number, frame in enumerate(pages):
        list(chain.apply(frame, BatchInfo(run_id="r", batch_id=f"page-{number}", page_sha256="", pipeline="t")))
    out = [(batch.batch_id, frame["trade_id"].tolist()) for frame, batch in chain.finish()]
    chain.close()
    return out


def test_finish_batch_ids_derive_from_the_staged_input(tmp_path: Path) -> None:
    pages = [pd.DataFrame({"trade_id": ["T1", "T2", "T3"], "version": [1, 1, 1]}),
             pd.DataFrame({"trade_id": ["T1", "T4"], "version": [2, 1]})]

    once, again = _batches(tmp_path, pages, "once"), _batches(tmp_path, pages, "again")
    changed = _batches(tmp_path, [pages[0], pages[1].assign(trade_id=["T1", "T5"])], "changed")

    assert once == again and [rows for _, rows in once] == [["T1"], ["T2", "T3"], ["T4"]]
    assert len({batch_id for batch_id, _ in once}) == 3
    # the id of an output derives from the input read so far: a change shows from where it is read
    assert [b for b, _ in changed[:2]] == [b for b, _ in once[:2]] and changed[2][0] != once[2][0]


def test_whole_dataset_steps_chain_with_batch_steps_between(tmp_path: Path) -> None:
    from etrmflow.builtins.transforms import Derive
    from etrmflow.steps.aggregate import Aggregate

    steps = [Dedupe({"key": ["trade_id"], "order_by": ["version"], "chunk_rows": 1}),
             Derive({"columns": {"book": "'B-' + counterparty"}}),
             Aggregate({"group_by": ["book"], "measures": {"trades": {"count": "trade_id"}}, "chunk_rows": 1})]
    pages = [pd.DataFrame({"trade_id": ["T1", "T2"], "version": [1, 1], "counterparty": ["X", "Y"]}),
             pd.DataFrame({"trade_id": ["T1", "T3"], "version": [2, 1], "counterparty": ["Y", "Y"]})]

    out = apply_steps(steps, pages)

    assert out.to_dict("records") == [{"book": "B-Y", "trades": 3}]


def test_a_chain_without_staging_refuses_rows_for_a_whole_dataset_step() -> None:
    chain = StepChain([Dedupe({"key": ["trade_id"]})], staging=None)
    chain.open()
    with pytest.raises(TransformError, match=r"transforms\[0\] \(dedupe\) is a whole-dataset step.*dead-letter replay"):
        list(chain.apply(pd.DataFrame({"trade_id": ["T1"]}), BatchInfo(run_id="r", batch_id="b", page_sha256="",
                                                                        pipeline="t")))


def test_a_step_failing_on_the_staged_rows_names_itself(tmp_path: Path) -> None:
    class Broken(ChunkSizes):
        def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
            raise KeyError("boom")

    with pytest.raises(TransformError, match=r"transforms\[0\] \(chunk_sizes\) failed on the staged rows: KeyError"):
        apply_steps([Broken(["k"], 10)], [pd.DataFrame({"k": [1]})])


# --- resume and tidying ------------------------------------------------------------------------

def _checkpoint(folder: Path, run_id: str, pages_done: int) -> None:
    (folder / "trades.json").write_text(json.dumps({"run_id": run_id, "pages_done": pages_done}))


def _staged(store: StagingStore) -> list[int]:
    return sorted(pd.concat([c.frame for c in read_chunks(store, 0, 1, 100)] or [pd.DataFrame({"k": []})])["k"])


def test_a_resume_drops_the_batch_staged_after_the_last_checkpoint(tmp_path: Path) -> None:
    store = StagingStore(place(tmp_path))
    store.stage(0, "page-0", pd.DataFrame({"k": [1]}), ["k"])
    _checkpoint(tmp_path, "run1", 1)  # page 0 committed
    store.stage(0, "page-1", pd.DataFrame({"k": [2]}), ["k"])
    store.close()  # killed before page 1's checkpoint

    resumed = StagingStore(place(tmp_path, resume=True))

    assert _staged(resumed) == [1]  # page 1 is fetched again, maybe with other content
    resumed.stage(0, "page-1-refetched", pd.DataFrame({"k": [3]}), ["k"])
    _checkpoint(tmp_path, "run1", 2)
    resumed.close()
    assert _staged(StagingStore(place(tmp_path, resume=True))) == [1, 3]


def test_a_fresh_run_starts_empty_and_tidy_keeps_only_the_checkpointed_run(tmp_path: Path) -> None:
    old = StagingStore(place(tmp_path, run_id="old"))
    old.stage(0, "page-0", pd.DataFrame({"k": [1]}), ["k"])
    old.close()
    _checkpoint(tmp_path, "old", 1)
    new = StagingStore(place(tmp_path, run_id="new"))
    assert _staged(new) == []
    new.close()

    place(tmp_path, run_id="new").tidy()  # the new run died before its first checkpoint
    assert sorted(p.name for p in tmp_path.glob("trades.staging-*")) == ["trades.staging-old.db"]
    (tmp_path / "trades.json").unlink()  # the old run was finished off
    place(tmp_path, run_id="old").tidy()
    assert list(tmp_path.glob("trades.staging-*")) == []


def test_a_resume_whose_staging_is_gone_fails_instead_of_finishing_short(tmp_path: Path) -> None:
    _checkpoint(tmp_path, "run1", 3)
    with pytest.raises(StagingError, match=r"rows run run1 staged .* are gone .* run without --resume"):
        StagingStore(place(tmp_path, resume=True))


# --- columns some batches lack -------------------------------------------------------------------

def test_every_chunk_has_every_staged_column_in_first_seen_order(tmp_path: Path) -> None:
    first = pd.DataFrame({"k": [1], "fee": [1.5]})
    second = pd.DataFrame({"note": ["late"], "k": [2]})  # lacks fee (an optional field), adds note

    chunks = round_trip(tmp_path, [first, second], key=["k"], chunk_rows=1)

    assert [list(chunk.columns) for chunk in chunks] == [["k", "fee", "note"], ["k", "fee", "note"]]
    assert cells(chunks[0]["fee"]) == ["float:1.5"] and cells(chunks[0]["note"]) == ["NoneType:None"]
    assert cells(chunks[1]["fee"]) == ["NoneType:None"] and cells(chunks[1]["note"]) == ["str:'late'"]


def test_a_page_without_the_key_column_stages_its_rows_with_an_empty_key(tmp_path: Path) -> None:
    first = pd.DataFrame({"trade_id": ["T2", "T1"], "n": [1, 2]})
    second = pd.DataFrame({"n": [3]})

    (back,) = round_trip(tmp_path, [first, second], key=["trade_id"])

    assert back["n"].tolist() == [3, 2, 1]  # the empty key first, as nulls sort
    assert back["trade_id"].tolist()[1:] == ["T1", "T2"] and pd.isna(back["trade_id"].tolist()[0])


def test_a_group_key_no_page_had_fails_at_the_finish_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TransformError, match=r"transforms\[0\] \(dedupe\): no page had its group key: "
                                             r"dedupe: no column trade_idd \(columns: trade_id\)"):
        apply_steps([Dedupe({"key": ["trade_idd"]})], [pd.DataFrame({"trade_id": ["T1"]})])
