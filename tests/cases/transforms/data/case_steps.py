"""Project code for the `python` step's cases (tests/cases/transforms/python.yml)."""

from __future__ import annotations

from typing import Any

import pandas as pd

BOOKS = {"DE-BASE-D": "POWER-DE", "NBP-DA": "GAS-UK"}
NOT_A_FUNCTION = 42


def add_book(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(book=[BOOKS.get(code, "OTHER") for code in frame["product_code"]])


def scale(frame: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    return frame.assign(**{options["into"]: frame[options["column"]] * options["factor"]})


def count_calls(frame: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    """Changes its options: the next batch must still get the options as written in YAML."""
    options["calls"] = options.get("calls", 0) + 1
    return frame.assign(calls=options["calls"])


def changes_in_place(frame: pd.DataFrame) -> None:
    frame["x"] = 1


def returns_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")


def fails(frame: pd.DataFrame) -> pd.DataFrame:
    raise LookupError(f"no book for product {frame['product_code'].iloc[0]}")


def one_argument(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def renumbered_halves(frame: pd.DataFrame) -> pd.DataFrame:
    """The first row, then the rest, each part numbered from 0: a frame whose index repeats
    (pd.concat without ignore_index, a common slip). Steps after it must still see every row once."""
    return pd.concat([frame.iloc[:1].reset_index(drop=True), frame.iloc[1:].reset_index(drop=True)])
