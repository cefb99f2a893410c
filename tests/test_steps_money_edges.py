"""Built-in steps fed keys and codes that used to alter money rows silently: a pence price read
as pounds (``GBp``), a boolean key merged with a number by ``dedupe``, a numeric key that a
``join`` compared as text and so dropped or failed. The case files
(tests/cases/transforms/normalise_currency_minor_units.yml, dedupe_key_types.yml,
join_numeric_keys.yml) hold the rest; these need frames a YAML page cannot make (categories,
numpy scalars, Decimals next to ints) or an SQLite table of mixed cell types.
"""

from __future__ import annotations

import contextlib
import decimal
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from test_steps_adversarial import rows, step  # steps built as a pipeline builds them

from etrmflow.engine.stages import apply_steps

D = decimal.Decimal


# --- normalise_currency ----------------------------------------------------------------------

def test_a_pence_price_in_a_category_column_is_divided_and_labelled_in_pounds() -> None:
    frame = pd.DataFrame({"price": [D("4040.00"), D("40.40"), D("4040.00")],
                          "currency": pd.Categorical(["GBp", "GBP", "gbx"])})

    out = step("normalise_currency", currency_column="currency", columns=["price"]).apply(frame)

    assert out["price"].tolist() == [D("40.40"), D("40.40"), D("40.40")]
    assert [str(type(v).__name__) for v in out["price"]] == ["Decimal"] * 3
    assert out["currency"].tolist() == ["GBP", "GBP", "GBP"]


def test_a_currency_of_codes_takes_its_small_letter_hundredth_too() -> None:
    frame = pd.DataFrame({"price": [150.0, 150.0], "currency": ["ILs", "ILS"]})

    out = step("normalise_currency", currency_column="currency", columns=["price"], codes={"ILA": "ILS"}).apply(frame)

    assert rows(out) == [{"price": 1.5, "currency": "ILS"}, {"price": 150.0, "currency": "ILS"}]


# --- dedupe ----------------------------------------------------------------------------------

def test_numpy_booleans_and_integers_are_different_keys_and_equal_numbers_one() -> None:
    frame = pd.DataFrame({"key": pd.array([np.bool_(True), np.int64(1), np.bool_(False), np.int64(0), D("1.0")],
                                          dtype=object),
                          "price": [D("1.00"), D("2.00"), D("3.00"), D("4.00"), D("5.00")]})
    dedupe = step("dedupe", key=["key"])

    out = apply_steps([dedupe], [frame])

    kept = sorted((str(price), type(key).__name__, str(key)) for key, price in zip(out["key"], out["price"]))
    assert kept == [("1.00", "bool", "True"), ("3.00", "bool", "False"), ("4.00", "int64", "0"),
                    ("5.00", "Decimal", "1.0")]  # the integer 1 and Decimal 1.0 are one number: the later kept
    assert dedupe.counters()["duplicates_dropped"] == 1


def test_a_boolean_key_on_one_page_and_an_integer_key_on_another_stay_two_records() -> None:
    """Staged pages of a bool column and an int64 column came back joined by pandas 3 as int64:
    True became 1 before dedupe saw it, and one of the two records was dropped."""
    dedupe = step("dedupe", key=["key"])

    out = apply_steps([dedupe], [pd.DataFrame({"key": [True], "price": [D("1.00")]}),
                                 pd.DataFrame({"key": [1], "price": [D("2.00")]})])

    assert sorted((type(k).__name__, str(p)) for k, p in zip(out["key"], out["price"])) == [
        ("bool", "1.00"), ("int", "2.00")]


def test_a_boolean_value_column_keeps_its_booleans_across_pages_of_integers() -> None:
    dedupe = step("dedupe", key=["trade_id"])

    out = apply_steps([dedupe], [pd.DataFrame({"trade_id": ["T-1", "T-2"], "flag": [True, False]}),
                                 pd.DataFrame({"trade_id": ["T-3"], "flag": [7]})])

    assert [(t, type(f).__name__, f) for t, f in zip(out["trade_id"], out["flag"])] == [
        ("T-1", "bool", True), ("T-2", "bool", False), ("T-3", "int", 7)]


def test_aggregate_and_vwap_group_a_boolean_apart_from_the_number_one() -> None:
    frame = pd.DataFrame({"firm": pd.array([True, 1, True, 1], dtype=object),
                          "price": [D("10.00"), D("20.00"), D("30.00"), D("40.00")],
                          "volume": [D("1"), D("1"), D("1"), D("3")]})
    aggregate = step("aggregate", group_by=["firm"], measures={"total": {"sum": "price"}})
    vwap = step("vwap", group_by=["firm"], price="price", volume="volume", scale=2)

    totals = apply_steps([aggregate], [frame])
    prices = apply_steps([vwap], [frame])

    assert [(type(f).__name__, str(t)) for f, t in zip(totals["firm"], totals["total"])] == [
        ("bool", "40.00"), ("int", "60.00")]
    assert [(type(f).__name__, str(v)) for f, v in zip(prices["firm"], prices["vwap"])] == [
        ("bool", "20.00"), ("int", "35.00")]


# --- join --------------------------------------------------------------------------------------

def _table(path: Path, rows_: list[tuple[Any, str]]) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE refs (id, label TEXT)")  # no affinity: each cell keeps its own type
        db.executemany("INSERT INTO refs VALUES (?, ?)", rows_)
        db.commit()


def test_numbers_match_sqlite_cells_by_value_and_text_matches_text_exactly(tmp_path: Path) -> None:
    _table(tmp_path / "ref.db", [("7.00", "seven"), (8, "eight"), (8.5, "eight and a half"), ("A7", "code")])
    join = step("join", tmp_path, database="ref.db", table="refs", on=["id"], columns=["label"], unmatched="null")
    frame = pd.DataFrame({"id": pd.array([7, D("8.0"), np.float64(8.5), "8", "8.50", "A7", "7"], dtype=object)})

    out = join.apply(frame)

    assert out["label"].tolist() == ["seven", "eight", "eight and a half", "eight", None, "code", None]
    assert join.counters() == {"rows_in": 7, "unmatched_kept": 2}


def test_an_integer_column_of_the_pipeline_matches_a_csv_written_with_cents_and_drops_nothing(tmp_path: Path) -> None:
    (tmp_path / "books.csv").write_text("trade_no,book\n1001.00,POWER\n1002.00,GAS\n", encoding="utf-8")
    join = step("join", tmp_path, file="books.csv", on=["trade_no"], columns=["book"], how="inner")
    frame = pd.DataFrame({"trade_no": np.array([1001, 1002, 1001], dtype="int64"),
                          "price": [D("40.50"), D("12.25"), D("40.55")]})

    out = join.apply(frame)

    assert out["book"].tolist() == ["POWER", "GAS", "POWER"]
    assert out["price"].tolist() == [D("40.50"), D("12.25"), D("40.55")]
    assert join.counters() == {"rows_in": 3, "unmatched_dropped": 0}
