"""The other side of a reconciliation: read in chunks from a CSV file or an SQLite table, its
keys converted to the pipeline's key types, and values compared within tolerances.

Files are found and CSV is read as the ``join`` step and the reference validators do it
(``etrmflow.validation.reference``): UTF-8 with a header line, empty cells empty, numbers
compared as the digits written.
"""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etrmflow.engine.staging_codec import object_array
from etrmflow.steps.common import StepError
from etrmflow.steps.tables import table_rows
from etrmflow.steps.values import is_missing
from etrmflow.validation.reference import project_file, read_csv, text_key, to_decimal

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True, slots=True, kw_only=True)
class OtherSide:
    """Where the other dataset is, and which of its columns answer to the pipeline's names."""

    file: str | None
    database: str | None
    table: str | None
    columns: dict[str, str]
    """{pipeline column: other side's column} for the keys and the compared fields."""

    def describe(self) -> str:
        return self.file if self.file else f"table {self.table!r} of {self.database}"

    def chunks(self, project_dir: str, rows: int) -> Iterator[pd.DataFrame]:
        """The other side's rows, ``rows`` at a time, under the pipeline's column names."""
        try:
            source = self._csv(project_dir) if self.file else self._table(project_dir)
            batch: list[tuple[Any, ...]] = []
            for row in source:
                batch.append(row)
                if len(batch) >= rows:
                    yield self._frame(batch)
                    batch = []
            if batch:
                yield self._frame(batch)
        except (ValueError, sqlite3.Error) as exc:
            raise StepError(f"reconcile: {exc}") from exc

    def _frame(self, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(rows, columns=list(self.columns))
        return frame.astype(object).where(frame.notna(), None)

    def _csv(self, project_dir: str) -> Iterator[tuple[Any, ...]]:
        path = project_file(project_dir, str(self.file), "reconcile file")
        for _, cells in read_csv(path, list(self.columns.values())):
            yield tuple(cell if cell != "" else None for cell in cells)

    def _table(self, project_dir: str) -> Iterator[tuple[Any, ...]]:
        path: Path = project_file(project_dir, str(self.database), "reconcile database")
        yield from table_rows(path, str(self.table), list(self.columns.values()))


# ---------------------------------------------------------------------------------------------
# Values of the other side, as the pipeline's types
# ---------------------------------------------------------------------------------------------

def converter(sample: pd.Series | None) -> Any:
    """How to turn the other side's values into the type of the pipeline's column ``sample``
    (text when that fails, so an unreadable key matches nothing instead of failing the run).

    A column of Python objects is judged by its first value, not its dtype: rows of a page in
    which every value was empty make an integer column an object column."""
    if sample is None:
        return lambda value: value
    dtype = sample.dtype
    types = pd.api.types
    if dtype == object:
        first = next((value for value in sample.tolist() if not is_missing(value)), None)
        return _by_value(first)
    if types.is_bool_dtype(dtype):
        return _boolean
    if types.is_integer_dtype(dtype):
        return _integer
    if types.is_float_dtype(dtype):
        return lambda value: _number(value, float)
    if isinstance(dtype, pd.DatetimeTZDtype) or types.is_datetime64_dtype(dtype):
        return lambda value: _timestamp(value, getattr(dtype, "tz", None))
    return _text


def as_type_of(ours: Any, theirs: Any) -> Any:
    """The other side's value as the type of the pipeline's value for the same key. The other
    side is read as the types of the first chunk's values; text there (all of that chunk's
    values were empty) is read again here, so the result does not depend on the chunking."""
    if isinstance(theirs, str) and not isinstance(ours, str) and not is_missing(ours):
        return _by_value(ours)(theirs)
    return theirs


def typed_like(values: list[Any], dtype: Any) -> Any:
    """``values`` as a column of the pipeline's ``dtype`` when it holds each of them as it is
    (the other side's keys included: a category without them would empty them, a boolean column
    would make any text True); else the values as they are."""
    if isinstance(dtype, pd.CategoricalDtype) and not all(is_missing(v) or v in dtype.categories for v in values):
        return object_array(values)
    try:
        typed = pd.Series(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        return object_array(values)
    for value, kept in zip(values, typed.tolist()):
        missing = is_missing(value)
        if missing != is_missing(kept) or (not missing and (type(kept) is not type(value) and kept != value
                                                             or _kind(kept) != _kind(value))):
            return object_array(values)
    return typed


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    return "text" if isinstance(value, str) else "other"


def _by_value(first: Any) -> Any:
    if isinstance(first, (bool, np.bool_)):
        return _boolean
    if isinstance(first, (int, np.integer)):
        return _integer
    if isinstance(first, (float, np.floating)):
        return lambda value: _number(value, float)
    if isinstance(first, decimal.Decimal):
        return lambda value: _number(value, lambda d: d)
    if isinstance(first, (pd.Timestamp, dt.datetime)):
        return lambda value: _timestamp(value, first.tzinfo)
    return _text


def _text(value: Any) -> Any:
    return value if is_missing(value) else (text_key(value) or str(value))


def _boolean(value: Any) -> Any:
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else value


def _integer(value: Any) -> Any:
    number = to_decimal(value)
    return int(number) if number is not None and number == number.to_integral_value() else value


def _number(value: Any, kind: Any) -> Any:
    number = to_decimal(value)
    return value if number is None else kind(number)


def _timestamp(value: Any, tz: Any) -> Any:
    if is_missing(value):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return value
    if (stamp.tz is None) != (tz is None):
        return value  # an instant never equals a wall-clock time
    return stamp.tz_convert(tz) if tz is not None else stamp


# ---------------------------------------------------------------------------------------------
# Comparing one field
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Tolerance:
    """Within tolerance: |a - b| <= abs, or |a - b| <= rel x max(|a|, |b|); neither: equal."""

    absolute: decimal.Decimal | None = None
    relative: decimal.Decimal | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> Tolerance:
        def number(key: str) -> decimal.Decimal | None:
            return to_decimal(spec[key]) if key in spec else None

        return cls(absolute=number("abs"), relative=number("rel"))

    @property
    def numeric(self) -> bool:
        return self.absolute is not None or self.relative is not None

    def within(self, a: decimal.Decimal, b: decimal.Decimal, diff: decimal.Decimal) -> bool:
        gap = abs(diff)
        if not self.numeric:
            return gap == 0
        if self.absolute is not None and gap <= self.absolute:
            return True
        return self.relative is not None and gap <= self.relative * max(abs(a), abs(b))


def compare(ours: Any, theirs: Any, tolerance: Tolerance) -> tuple[bool, decimal.Decimal | None]:
    """(equal within tolerance, ours - theirs when both are numbers).

    Numbers compare as numbers (exactly, as Decimals), text as text; a tolerance makes both
    values numbers or the comparison fails. Two empty values are equal."""
    if is_missing(ours) or is_missing(theirs):
        return is_missing(ours) and is_missing(theirs), None
    text = isinstance(ours, str) or isinstance(theirs, str)
    a, b = _as_number(ours), _as_number(theirs)
    if a is None or b is None or (text and not tolerance.numeric):
        return not tolerance.numeric and _same_text(ours, theirs), None
    with decimal.localcontext(decimal.Context(prec=decimal.MAX_PREC)):
        diff = a - b
        return tolerance.within(a, b, diff), diff


def _same_text(ours: Any, theirs: Any) -> bool:
    a, b = text_key(ours), text_key(theirs)
    return a == b if a is not None and b is not None else bool(ours == theirs)


def _as_number(value: Any) -> decimal.Decimal | None:
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, decimal.Decimal):
        value = item()
    return to_decimal(value)
