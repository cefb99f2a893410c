"""Steps fed the inputs that used to alter settlement rows silently: keys a pipeline dtype cannot
hold, timestamps beyond nanoseconds or of second precision, the same rows in other page orders
and chunk sizes. The case files (tests/cases/transforms/naive_times.yml, dedupe_instants.yml,
intervals_edges.yml, legs_integers.yml, rename_collisions.yml, reconcile_types.yml) hold the
rest; these need a file of their own, frames a YAML page cannot make, or many runs compared.
"""

from __future__ import annotations

import decimal
import itertools
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from etrmflow.components import Kind
from etrmflow.engine.stages import apply_steps
from etrmflow.errors import TransformError
from etrmflow.plugins import Registry
from etrmflow.steps.common import StepError
from etrmflow.steps.values import is_missing


def step(type_name: str, project: Path | None = None, **options: Any) -> Any:
    cls = Registry.default(load_entry_points=False).get(Kind.TRANSFORM, type_name)
    assert cls is not None
    return cls(options, project_dir=str(project or "."))


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if is_missing(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


# --- reconcile: the other side's keys as they are, when the pipeline's dtype cannot hold them --

def test_a_text_key_only_the_other_side_has_is_not_turned_into_true_by_a_boolean_key_column(tmp_path: Path) -> None:
    (tmp_path / "flags.csv").write_text("flag,v\ntrue,1\nmaybe,2\n", encoding="utf-8")
    reconcile = step("reconcile", tmp_path, file="flags.csv", on=["flag"], compare={"v": {}})

    out = apply_steps([reconcile], [pd.DataFrame({"flag": [True], "v": [1]})])

    assert [(row["flag"], row["status"], row["reason"]) for row in rows(out)] == [
        (True, "matched", None), ("maybe", "break", "missing_in_pipeline")]


def test_an_integer_key_beyond_int64_on_the_other_side_is_a_break_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("order_no,v\n1,1\n99999999999999999999,3\n2.5,2\n", encoding="utf-8")
    for dtype in ("int64", "Int64"):
        reconcile = step("reconcile", tmp_path, file="orders.csv", on=["order_no"], compare={"v": {}})

        out = apply_steps([reconcile], [pd.DataFrame({"order_no": pd.array([1], dtype=dtype), "v": [1]})])

        assert [(row["order_no"], row["reason"]) for row in rows(out)] == [
            (1, None), (99999999999999999999, "missing_in_pipeline"), ("2.5", "missing_in_pipeline")], dtype


def test_keys_the_pipeline_dtype_holds_keep_that_dtype(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("order_no,v\n1,1\n2,2\n", encoding="utf-8")
    reconcile = step("reconcile", tmp_path, file="orders.csv", on=["order_no"])

    out = apply_steps([reconcile], [pd.DataFrame({"order_no": pd.array([1], dtype="Int64")})])

    assert str(out["order_no"].dtype) == "Int64"
    assert out["order_no"].tolist() == [1, 2]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 50_000])
def test_a_reconciliation_does_not_depend_on_how_the_rows_are_chunked(tmp_path: Path, chunk_rows: int) -> None:
    (tmp_path / "other.csv").write_text("id,price,volume\nA,,1\nB,1.10,2\nC,2.5,3.0\nD,7,4\n", encoding="utf-8")
    pages = [pd.DataFrame({"id": ["A"], "price": pd.Series([None], dtype=object), "volume": [None]}),
             pd.DataFrame({"id": ["B", "C", "D"], "price": [decimal.Decimal("1.10"), decimal.Decimal("2.50"),
                                                          decimal.Decimal("7.00")], "volume": [2, 3, 4]})]
    reconcile = step("reconcile", tmp_path, file="other.csv", on=["id"], compare={"price": {}, "volume": {}},
                     chunk_rows=chunk_rows)

    out = apply_steps([reconcile], pages)

    assert [(row["id"], row["status"], row["reason"]) for row in rows(out)] == [
        ("A", "break", "volume_mismatch"), ("B", "matched", None), ("C", "matched", None), ("D", "matched", None)]
    assert [type(value) for value in out["price_reference"].tolist()[1:]] == [decimal.Decimal] * 3


# --- expand_intervals: every unit pandas keeps instants in ----------------------------------

@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_intervals_of_timestamps_in_any_unit(unit: str) -> None:
    instants = pd.to_datetime(pd.Series(["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]), utc=True)
    frame = pd.DataFrame({"s": instants[:1].dt.as_unit(unit), "e": instants[1:].reset_index(drop=True).dt.as_unit(unit)})
    expand = step("expand_intervals", start="s", end="e", resolution="PT30M", tz="Europe/London", local_start="ls")

    out = expand.apply(frame)

    assert [t.isoformat() for t in out["interval_start"]] == ["2026-10-25T00:30:00+00:00", "2026-10-25T01:00:00+00:00"]
    assert [t.isoformat() for t in out["ls"]] == ["2026-10-25T01:30:00+01:00", "2026-10-25T01:00:00+00:00"]


def test_a_period_in_the_year_3026_is_cut_there() -> None:
    """A typo in the year (3026 for 2026) is beyond pandas' nanoseconds: the intervals used to wrap
    into the 18th century without a word; now they are where the data says."""
    expand = step("expand_intervals", start="s", end="e", resolution="PT15M", tz="Europe/Berlin")

    out = expand.apply(pd.DataFrame({"s": ["3026-06-01T00:00:00+02:00"], "e": ["3026-06-01T01:00:00+02:00"]}))

    assert [t.isoformat() for t in out["interval_end"]] == [
        "3026-05-31T22:15:00+00:00", "3026-05-31T22:30:00+00:00", "3026-05-31T22:45:00+00:00",
        "3026-05-31T23:00:00+00:00"]


def test_naive_timestamps_are_refused_by_to_local_time() -> None:
    frame = pd.DataFrame({"t": pd.to_datetime(["2026-03-29T01:00:00"])})

    with pytest.raises(StepError, match="to_local_time: column 't' holds timestamps without a time zone"):
        step("to_local_time", columns=["t"], tz="Europe/Berlin").apply(frame)


@pytest.mark.parametrize("dtype", [object, "str"])
def test_parse_timestamps_checks_offsets_the_same_in_text_and_object_columns(dtype: Any) -> None:
    good = pd.DataFrame({"t": pd.Series(["2026-03-29T01:00:00+01:00", None, "2026-03-29T00:00:00Z"], dtype=dtype)})
    bad = pd.DataFrame({"t": pd.Series(["2026-03-29T01:00:00+01:00", "2026-03-29T01:00:00"], dtype=dtype)})
    parse = step("parse_timestamps", columns=["t"])

    assert [None if pd.isna(t) else t.isoformat() for t in parse.apply(good)["t"]] == [
        "2026-03-29T00:00:00+00:00", None, "2026-03-29T00:00:00+00:00"]
    with pytest.raises(StepError, match="holds 2026-03-29T01:00:00 without a UTC offset"):
        parse.apply(bad)


def test_parse_timestamps_takes_timestamps_with_a_zone_among_text_as_they_are() -> None:
    frame = pd.DataFrame({"t": pd.Series([pd.Timestamp("2026-10-25T01:30:00+00:00"), "2026-10-25T01:30:00+01:00"],
                                         dtype=object)})

    out = step("parse_timestamps", columns=["t"]).apply(frame)

    assert [t.isoformat() for t in out["t"]] == ["2026-10-25T01:30:00+00:00", "2026-10-25T00:30:00+00:00"]


# --- dedupe: the same rows in any page order and chunking keep the same versions ----------------

def _versions() -> list[pd.DataFrame]:
    updates = [("T1", 1, "2026-10-25T02:50:00+02:00"), ("T1", 1, "2026-10-25T02:10:00+01:00"),
               ("T2", 3, "2026-03-26T13:49:28.5Z"), ("T2", 3, "2026-03-26T13:49:28Z"),
               ("T2", 2, "2026-03-26T14:00:00Z"), ("T3", 1, None), ("T3", 1, "2026-01-01T00:00:00-06:00")]
    return [pd.DataFrame({"trade_id": [t], "version": [v], "updated_at": pd.Series([u], dtype=object),
                          "price": [decimal.Decimal(f"{n}.00")]}) for n, (t, v, u) in enumerate(updates)]


@pytest.mark.parametrize("keep", ["latest", "first"])
def test_dedupe_keeps_the_same_rows_whatever_the_page_order_and_chunk_size(keep: str) -> None:
    pages = _versions()
    seen = set()
    for order in itertools.islice(itertools.permutations(pages), 0, None, 499):
        for chunk_rows in (1, 2, 50_000):
            dedupe = step("dedupe", key=["trade_id"], order_by=["version", "updated_at"], keep=keep,
                          chunk_rows=chunk_rows)
            out = apply_steps([dedupe], list(order))
            seen.add(tuple(map(str, out["price"])))
    assert seen == ({("1.00", "2.00", "6.00")} if keep == "latest" else {("0.00", "4.00", "5.00")})


def test_dedupe_names_the_step_when_a_chunk_mixes_offsets_and_naive_times() -> None:
    pages = [pd.DataFrame({"trade_id": ["T1", "T1"], "updated_at": ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00"]})]

    with pytest.raises(TransformError, match="dedupe: order_by column 'updated_at' holds 2026-01-01T01:00:00"):
        apply_steps([step("dedupe", key=["trade_id"], order_by=["updated_at"])], pages)
