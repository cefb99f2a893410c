"""Value handling shared by the built-in steps: empty cells, exact money arithmetic, instants
with offsets, and how a row is named in an error message.

Money arrives as ``Decimal`` (contract fields declared ``x-etrmflow-decimal``) and must stay
exact: sums and products never round (``exact_sum``, ``exact_product``); every scaling or
quotient goes through ``fractions.Fraction`` and is rounded at most once, half to even, at a
``scale`` the step declares (``decimal_of``, ``divide``); without one, a result that has no
finite decimal form is an error. Floats are measurements, not money: float arithmetic.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from etrmflow.steps.common import StepError

SCALE = {"type": "integer", "minimum": 0, "maximum": 18}
"""Options schema of a number of decimal places."""

_SHOWN = 5
# An offset counts only after a time of day: the "-29" of the date 2026-03-29 is no offset.
# One pattern for Python's re and Arrow's RE2 (which checks a whole column in compiled code).
_OFFSET_PATTERN = r"[Tt ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$"
_OFFSET = re.compile(_OFFSET_PATTERN)


class Inexact(ArithmeticError):
    """A Decimal result has no finite decimal form and no scale was declared to round it."""

    def __init__(self, exact: Fraction) -> None:
        with decimal.localcontext() as context:
            context.prec = 20
            super().__init__(f"{decimal.Decimal(exact.numerator) / exact.denominator}...")
        self.exact = exact


EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                        traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
"""Sums and products in this context are exact, or raise (they cannot round silently)."""


def is_missing(value: Any) -> bool:
    """None, NaN (float or Decimal), NaT or pd.NA: an empty cell, as ``pd.isna`` sees it."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, decimal.Decimal) and value.is_nan()


def has_decimals(series: pd.Series) -> bool:
    """True when the column holds Decimal values (money declared x-etrmflow-decimal)."""
    return series.dtype == object and any(isinstance(v, decimal.Decimal) for v in series.tolist())


def to_decimal(value: Any, what: str) -> decimal.Decimal:
    """A finite number as a Decimal: a float by its shortest repr, i.e. the digits the vendor
    sent. StepError, starting with ``what``, for anything else."""
    item = getattr(value, "item", None)
    value = item() if callable(item) and not isinstance(value, decimal.Decimal) else value
    if isinstance(value, decimal.Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = decimal.Decimal(value)
    elif isinstance(value, float):
        number = decimal.Decimal(repr(value))
    else:
        raise StepError(f"{what}: {value!r} is not a number")
    if not number.is_finite():
        raise StepError(f"{what}: {number} is not a finite number")
    return number


def exact_sum(values: Iterable[decimal.Decimal]) -> decimal.Decimal:
    total = decimal.Decimal(0)
    for value in values:
        total = EXACT.add(total, value)
    return total


def exact_product(a: decimal.Decimal, b: decimal.Decimal) -> decimal.Decimal:
    return EXACT.multiply(a, b)


def divide(numerator: decimal.Decimal, denominator: decimal.Decimal, scale: int) -> decimal.Decimal:
    """``numerator / denominator`` rounded half to even to ``scale`` decimals, in one rounding."""
    return decimal_of(Fraction(numerator) / Fraction(denominator), scale)


def decimal_of(exact: Fraction, scale: int | None, *, like: decimal.Decimal | None = None) -> decimal.Decimal:
    """``exact`` as a Decimal: rounded half to even at ``scale`` places when a scale is given, else
    exact (Inexact when impossible) with at least as many decimal places as ``like`` (so
    4040.00 / 100 gives 40.40, not 40.4)."""
    if scale is not None:
        return decimal.Decimal(f"{round(exact * 10 ** scale)}E-{scale}")
    twos, fives, rest = _factor_2_5(exact.denominator)
    if rest != 1:
        raise Inexact(exact)
    kept = -int(like.as_tuple().exponent) if like is not None and like.is_finite() else 0
    places = max(twos, fives, kept)
    return decimal.Decimal(f"{exact.numerator * 10 ** places // exact.denominator}E-{places}")


def _factor_2_5(number: int) -> tuple[int, int, int]:
    twos = fives = 0
    while number % 2 == 0:
        number, twos = number // 2, twos + 1
    while number % 5 == 0:
        number, fives = number // 5, fives + 1
    return twos, fives, number


def scale_values(values: pd.Series, factor: Fraction, scale: int | None, *, where: str) -> pd.Series:
    """Every value of a numeric column times ``factor``: Decimals exactly (see ``decimal_of``),
    floats and integers as floats, empty cells left empty. ``where`` names the column in errors."""
    if pd.api.types.is_bool_dtype(values.dtype):
        raise StepError(f"{where} holds booleans, not numbers")
    if pd.api.types.is_numeric_dtype(values.dtype):
        floats = values.astype("float64")
        return floats if factor == 1 else floats * factor.numerator / factor.denominator
    return pd.Series([_scale_one(value, factor, scale, where) for value in values], index=values.index,
                     dtype=object)


def scale_rows(values: pd.Series, rows: np.ndarray, factor: Fraction, scale: int | None, *,
               where: str) -> pd.Series:
    """``values`` with the rows at the positions ``rows`` scaled (``scale_values``), the others
    as they were. By position: after a step whose frame repeats index labels, a label would pick
    rows that must not change."""
    converted = scale_values(values.iloc[rows], factor, scale, where=where)
    kept = values if converted.dtype == values.dtype else values.astype(converted.dtype)
    array = kept.to_numpy(copy=True)
    array[rows] = converted.to_numpy()
    return pd.Series(array, index=values.index, dtype=kept.dtype, name=values.name)


def _scale_one(value: Any, factor: Fraction, scale: int | None, where: str) -> Any:
    if is_missing(value):
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise StepError(f"{where} holds {value}, which is not a finite number")
        try:
            return decimal_of(Fraction(value) * factor, scale, like=value)
        except Inexact as exc:
            raise StepError(f"{where}: {value} gives {exc}, which has no exact decimal form; set `scale` "
                            f"to round to that many decimal places (half to even)") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StepError(f"{where} holds {value!r} ({type(value).__name__}), not a number; "
                        f"convert it first (e.g. with cast, or declare it x-etrmflow-decimal in the contract)")
    return float(value) * factor.numerator / factor.denominator


def utc_instants(values: pd.Series, *, where: str) -> pd.Series:
    """A column of instants as UTC timestamps: timezone-aware timestamps as they are, or ISO 8601
    text with an offset (``Z``, ``+01:00``). Naive values are refused: their zone would be a guess.
    Empty cells become NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        raise StepError(f"{where} holds timestamps without a time zone; parse them with "
                        f"parse_timestamps (assume_tz: <zone>) first")
    naive = _first_naive(values, where)
    if naive is not None:
        raise StepError(f"{where} holds {naive!s:.40} without a UTC offset; send or parse times with "
                        f"an offset (parse_timestamps with assume_tz names the zone of local times)")
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise StepError(f"{where} holds a value that is not an ISO 8601 time: {exc}") from None


def offset_text(values: pd.Series) -> bool:
    """True when a text column holds at least one ISO 8601 date-time with a UTC offset: an
    instant spelt as text, which ranks by the instant, not letter by letter."""
    if not pd.api.types.is_string_dtype(values.dtype):
        return False
    matched = _offset_matches(values)
    if matched is None:
        return any(isinstance(v, str) and _OFFSET.search(v) is not None for v in values.tolist())
    return bool(matched.any())


def _first_naive(values: pd.Series, where: str) -> Any:
    """The first value that is no instant with an offset (None: every value has one, or is empty)."""
    matched = _offset_matches(values)
    if matched is not None:  # all text: one compiled pass over the column
        bad = np.flatnonzero(~matched & values.notna().to_numpy(dtype=bool))
        return values.iloc[bad[0]] if len(bad) else None
    for value in values[~values.map(is_missing)]:
        naive = isinstance(value, str) and not _OFFSET.search(value)
        if naive or (hasattr(value, "tzinfo") and value.tzinfo is None):
            return value
        if not isinstance(value, (str, pd.Timestamp)) and not hasattr(value, "tzinfo"):
            raise StepError(f"{where} holds {value!r} ({type(value).__name__}), not a time")
    return None


def _offset_matches(values: pd.Series) -> np.ndarray | None:
    """Per value, whether it is text ending in a time with an offset (empty cells: False);
    None when the column holds something other than text and empty cells."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        texts = pa.array(values, type=pa.string(), from_pandas=True)
    except pa.ArrowException:  # numbers, timestamps, mixed objects: checked value by value
        return None
    zulu = pc.fill_null(pc.ends_with(texts, "Z"), False)  # most vendors: a cheap test settles it
    if pc.all(zulu).as_py():
        return np.ones(len(texts), dtype=bool)
    matched = pc.fill_null(pc.match_substring_regex(texts, _OFFSET_PATTERN), False)
    return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)


def row_names(frame: pd.DataFrame, positions: list[int]) -> str:
    """How an error names rows: their position in the batch and the first column's value
    (the contract's first property, usually the record's id), a few of them at most."""
    first = frame.columns[0] if len(frame.columns) else None
    shown = []
    for position in positions[:_SHOWN]:
        label = f"row {position}"
        if first is not None:
            label += f" ({first}={frame.iloc[position][first]!s:.60})"
        shown.append(label)
    more = f" and {len(positions) - _SHOWN} more" if len(positions) > _SHOWN else ""
    return ", ".join(shown) + more


def repeat_rows(frame: pd.DataFrame, counts: np.ndarray, *, without: Sequence[str] = ()) -> pd.DataFrame:
    """Each row repeated ``counts[i]`` times (zero drops it), dtypes kept, index renumbered."""
    kept = frame.drop(columns=list(without))
    repeated = kept.iloc[np.repeat(np.arange(len(kept)), counts)]
    return repeated.reset_index(drop=True)


@dataclass(frozen=True, slots=True)
class _Boolean:
    """A boolean key value, which equals no number (Python holds True == 1 and False == 0)."""

    value: bool


def key_values(values: pd.Series) -> pd.Series:
    """A key column as steps tell records apart: True and 1 are two keys, not one (pandas would
    group them); numbers equal in value (1, 1.0, Decimal 1.00) are one key, as the staging
    groups them; text never equals a number ("1" is not 1)."""
    if values.dtype != object:
        return values  # one type: a boolean column has no numbers to mistake its values for
    items = values.tolist()
    if not any(isinstance(item, (bool, np.bool_)) for item in items):
        return values
    return pd.Series([_Boolean(bool(item)) if isinstance(item, (bool, np.bool_)) else item for item in items],
                     index=values.index, dtype=object, name=values.name)


def group_codes(frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Each row's group number (groups numbered in order of first appearance, an empty key a
    group of its own) and each group's key values, as its first row holds them."""
    grouped = frame.groupby([key_values(frame[column]) for column in columns], sort=False, dropna=False)
    codes = grouped.ngroup().to_numpy()
    _, first = np.unique(codes, return_index=True)
    return codes, frame[columns].iloc[first].reset_index(drop=True)
