"""The join step reads its reference once per run, at the first batch.

The case file tests/cases/transforms/join.yml covers matching, types and every error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from etrmflow.components import Kind
from etrmflow.plugins import Registry
from etrmflow.steps.common import StepError


def build(project: Path, **options: Any) -> Any:
    cls = Registry.default(load_entry_points=False).get(Kind.TRANSFORM, "join")
    assert cls is not None
    return cls(options, project_dir=str(project))


def test_the_reference_is_read_at_the_first_batch_and_kept(tmp_path: Path) -> None:
    reference = tmp_path / "books.csv"
    step = build(tmp_path, file="books.csv", on=["code"], columns=["book"])
    reference.write_text("code,book\nA,first\n", encoding="utf-8")  # after building: read lazily

    first = step.apply(pd.DataFrame({"code": ["A"]}))
    reference.write_text("code,book\nA,changed\n", encoding="utf-8")
    second = step.apply(pd.DataFrame({"code": ["A"]}))
    reference.unlink()
    third = step.apply(pd.DataFrame({"code": ["A"]}))

    assert [first["book"][0], second["book"][0], third["book"][0]] == ["first", "first", "first"]


def test_a_missing_file_names_the_resolved_path(tmp_path: Path) -> None:
    step = build(tmp_path, file="reference/books.csv", on=["code"], columns=["book"])

    with pytest.raises(StepError, match=f"join: reference file {tmp_path / 'reference' / 'books.csv'} does not exist"):
        step.apply(pd.DataFrame({"code": ["A"]}))


def test_a_frame_after_a_filter_keeps_its_rows_aligned(tmp_path: Path) -> None:
    (tmp_path / "books.csv").write_text("code,book\nA,first\nB,second\n", encoding="utf-8")
    frame = pd.DataFrame({"code": ["A", "X", "B"]}).iloc[[0, 2]]  # index 0 and 2, as a filter leaves it

    out = build(tmp_path, file="books.csv", on=["code"], columns=["book"]).apply(frame)

    assert out.to_dict("list") == {"code": ["A", "B"], "book": ["first", "second"]}


def test_rows_an_inner_join_drops_and_unmatched_rows_kept_are_counted_in_the_run_results(tmp_path: Path) -> None:
    from etrmflow.components import BatchInfo
    from etrmflow.engine.stages import StepChain

    (tmp_path / "books.csv").write_text("code,book\nA,first\n", encoding="utf-8")
    inner = build(tmp_path, file="books.csv", on=["code"], columns=["book"], how="inner")
    kept = build(tmp_path, file="books.csv", on=["code"], columns={"book": "book_name"}, unmatched="null")
    chain = StepChain([inner, kept])
    written = []
    for number, codes in enumerate([["A", "X", "Y"], ["Z", "A"]]):
        batch = BatchInfo(run_id="r", batch_id=f"page-{number}", page_sha256="", pipeline="t")
        written += [len(frame) for frame, _ in chain.apply(pd.DataFrame({"code": codes}), batch)]

    assert written == [1, 1]
    assert chain.counters() == {"transforms[0].join": {"rows_in": 5, "unmatched_dropped": 3},
                                "transforms[1].join": {"rows_in": 2, "unmatched_kept": 0}}


def test_unmatched_rows_kept_with_empty_columns_are_counted(tmp_path: Path) -> None:
    (tmp_path / "books.csv").write_text("code,book\nA,first\n", encoding="utf-8")
    step = build(tmp_path, file="books.csv", on=["code"], columns=["book"], unmatched="null")

    out = step.apply(pd.DataFrame({"code": ["A", "X"]}))

    assert out["book"].tolist() == ["first", None]
    assert step.counters() == {"rows_in": 2, "unmatched_kept": 1}


def test_a_database_file_that_is_no_database_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "static.db").write_text("code,book\nA,first\n", encoding="utf-8")  # a CSV, misnamed
    step = build(tmp_path, database="static.db", table="books", on=["code"], columns=["book"])

    with pytest.raises(StepError, match=r"join: cannot read table 'books' of static.db: file is not a database"):
        step.apply(pd.DataFrame({"code": ["A"]}))
