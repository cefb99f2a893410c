"""Enrich rows from reference data: a CSV file or an SQLite table (``join``).

The reference is read once, at the step's first batch, and kept for the run. Keys are compared
as text (``etrmflow.validation.reference.text_key``), so a CSV column of ids matches a numeric
column, and string keys just work.
"""

from __future__ import annotations

import decimal
import sqlite3
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from etrmflow.components import Transform
from etrmflow.steps.common import StepError, options_object, require_columns
from etrmflow.steps.tables import table_rows
from etrmflow.steps.values import is_missing, row_names
from etrmflow.validation.reference import project_file, read_csv, text_key, to_decimal

_NAME = {"type": "string", "minLength": 1}
_NAMES = {"type": "array", "minItems": 1, "items": _NAME}
_NAME_MAP = {"type": "object", "minProperties": 1, "additionalProperties": _NAME}
_TYPES = ("string", "integer", "float", "decimal", "boolean")
_SHOWN_KEYS = 5

Key = tuple[str | None, ...]


class Join(Transform):
    """Bring columns in from reference data, a CSV file or an SQLite table, matched on key columns.

    ``on`` lists the key columns (the same names on both sides) or maps each frame column to
    the reference column it matches: ``{cpty_lei: lei}``. ``columns`` lists the reference
    columns to bring in, or maps each to a new name. Keys are compared as text, numbers in
    their shortest form, so ``7``, ``7.0`` and the CSV text ``7`` match. CSV values arrive as
    text (empty cells empty); ``types`` converts brought-in columns to ``integer``, ``float``,
    ``decimal`` (exact, for money), ``boolean`` or ``string``.

    A join never multiplies or silently drops rows. A key found twice in the reference fails the
    step, and so does a row that matches nothing, unless ``unmatched`` says otherwise: ``null``
    keeps it with the brought-in columns empty; ``keep`` also keeps the values of brought-in
    columns that already existed. ``how: inner`` drops the unmatched rows instead, on purpose,
    like a ``filter``. The reference is read at the first batch and kept for the run; a missing
    file, table or column fails the step with the path it looked at.

    Example::

        - {type: join, file: reference/counterparties.csv, on: {counterparty_lei: lei}, columns: {name: counterparty_name}}
    """

    type_name: ClassVar[str] = "join"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "file": {**_NAME, "description": "A CSV file (UTF-8, header line first), relative to the project folder."},
        "database": {**_NAME, "description": "An SQLite database, relative to the project folder; opened read-only."},
        "table": {**_NAME, "description": "With database: the table (or view)."},
        "on": {"oneOf": [_NAMES, _NAME_MAP], "type": ["array", "object"],
               "description": "Key columns, the same on both sides, or {frame column: reference column}."},
        "columns": {"oneOf": [_NAMES, _NAME_MAP], "type": ["array", "object"],
                    "description": "Reference columns to bring in, or {reference column: new name}."},
        "how": {"enum": ["left", "inner"], "description": "left (default) keeps every row; inner drops rows "
                                                          "without a match."},
        "unmatched": {"enum": ["error", "null", "keep"],
                      "description": "With how: left, a row without a match: error (default) fails the step, "
                                     "null leaves the brought-in columns empty, keep keeps the values of "
                                     "brought-in columns that already existed."},
        "types": {"type": "object", "additionalProperties": {"enum": list(_TYPES)},
                  "description": "{brought-in column: string|integer|float|decimal|boolean}; CSV values are "
                                 "text otherwise."},
    }, ["on", "columns"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        if ("file" in options) == ("database" in options) or ("database" in options) != ("table" in options):
            raise ValueError("give the reference as file (a CSV file) or as database with table (SQLite)")
        if options.get("how") == "inner" and "unmatched" in options:
            raise ValueError("how: inner drops rows without a match; unmatched applies to how: left only")
        on = options["on"]
        self.on: dict[str, str] = dict(on) if isinstance(on, Mapping) else {name: name for name in on}
        wanted = options["columns"]
        self.columns: dict[str, str] = dict(wanted) if isinstance(wanted, Mapping) else {n: n for n in wanted}
        unknown = sorted(set(options.get("types") or {}) - set(self.columns.values()))
        if unknown:
            raise ValueError(f"types names {', '.join(unknown)}, which columns does not bring in")
        if len(set(self.columns.values())) != len(self.columns):
            raise ValueError("columns brings two reference columns in under one name")
        self._reference: dict[Key, tuple[Any, ...]] | None = None
        # rows without a match that a run lets through or drops show in run_results.json (steps)
        self.unmatched_counter = _unmatched_counter(options)
        self.counts = {"rows_in": 0, self.unmatched_counter: 0} if self.unmatched_counter else {}

    def counters(self) -> dict[str, int]:
        """Rows in, and those without a match that were dropped (``how: inner``) or kept with
        empty columns (``unmatched: null``/``keep``), over the batches this process ran."""
        return dict(self.counts)

    @property
    def source(self) -> str:
        if "file" in self.options:
            return str(self.options["file"])
        return f"table {self.options['table']!r} of {self.options['database']}"

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        require_columns(frame, list(self.on), self.type_name)
        reference = self.reference()
        keys = _frame_keys(frame, list(self.on))
        found = [reference.get(key) if None not in key else None for key in keys]
        missing = [position for position, values in enumerate(found) if values is None]
        how, unmatched = self.options.get("how", "left"), self.options.get("unmatched", "error")
        if missing and how == "left" and unmatched == "error":
            raise StepError(f"{self.type_name}: {len(missing)} row(s) match nothing in {self.source}: "
                            f"{self._describe(frame, keys, missing)}; add them to the reference, or set "
                            f"`unmatched: null` to keep them with empty columns")
        matched = np.array([row is not None for row in found], dtype=bool)
        if self.unmatched_counter:
            self.counts["rows_in"] += len(frame)
            self.counts[self.unmatched_counter] += len(missing)
        out = frame.copy()
        for index, name in enumerate(self.columns.values()):
            values = [None if row is None else row[index] for row in found]
            column = self._typed(name, values, frame.index)
            if unmatched == "keep" and name in frame.columns:
                column = pd.Series(np.where(matched, column.astype(object).to_numpy(),
                                            frame[name].astype(object).to_numpy()), index=frame.index, dtype=object)
            out[name] = column
        if missing and how == "inner":
            # asked for: like a filter, the index keeps its gaps. By position, not by label: labels may repeat
            out = out.iloc[np.flatnonzero(matched)]
        return out

    def reference(self) -> dict[Key, tuple[Any, ...]]:
        """The reference rows by key, read at the first call and kept."""
        if self._reference is None:
            try:
                rows = self._read_file() if "file" in self.options else self._read_table()
            except ValueError as exc:
                raise StepError(f"{self.type_name}: {exc}") from None
            except sqlite3.Error as exc:  # e.g. the file is no SQLite database
                raise StepError(f"{self.type_name}: cannot read {self.source}: {exc}") from None
            self._reference = self._index(rows)
        return self._reference

    def _read_file(self) -> list[tuple[str, tuple[Any, ...]]]:
        path = project_file(self.project_dir, self.options["file"], "reference file")
        columns = [*self.on.values(), *self.columns]
        return [(f"line {line}", tuple(cell if cell != "" else None for cell in cells))
                for line, cells in read_csv(path, columns)]

    def _read_table(self) -> list[tuple[str, tuple[Any, ...]]]:
        path = project_file(self.project_dir, self.options["database"], "reference database")
        rows = table_rows(path, self.options["table"], [*self.on.values(), *self.columns])
        return [(f"row {number}", row) for number, row in enumerate(rows, 1)]

    def _index(self, rows: list[tuple[str, tuple[Any, ...]]]) -> dict[Key, tuple[Any, ...]]:
        width = len(self.on)
        index: dict[Key, tuple[Any, ...]] = {}
        where: dict[Key, str] = {}
        for place, row in rows:
            key = tuple(text_key(value) for value in row[:width])
            if None in key:  # an empty key cell matches nothing (an empty frame key never matches)
                continue
            if key in index:
                raise StepError(f"{self.type_name}: key {_show(key)} is in {self.source} twice ({where[key]} and "
                                f"{place}); a join must not multiply rows, so each key may appear only once")
            index[key], where[key] = row[width:], place
        return index

    def _typed(self, name: str, values: list[Any], index: pd.Index) -> pd.Series:
        kind = (self.options.get("types") or {}).get(name)
        if kind is None:
            return pd.Series(values, index=index, dtype=object)
        try:
            converted = [None if is_missing(value) else _CONVERT[kind](value) for value in values]
        except (ValueError, ArithmeticError) as exc:
            raise StepError(f"{self.type_name}: column {name!r} of {self.source} holds a value that is not "
                            f"{kind}: {exc}") from None
        return pd.Series(converted, index=index, dtype=_DTYPES[kind])

    def _describe(self, frame: pd.DataFrame, keys: list[Key], positions: list[int]) -> str:
        shown = ", ".join(f"{_show(keys[p])} ({row_names(frame, [p])})" for p in positions[:_SHOWN_KEYS])
        return shown + (f" and {len(positions) - _SHOWN_KEYS} more" if len(positions) > _SHOWN_KEYS else "")


def _unmatched_counter(options: Mapping[str, Any]) -> str | None:
    if options.get("how") == "inner":
        return "unmatched_dropped"
    return None if options.get("unmatched", "error") == "error" else "unmatched_kept"


def _frame_keys(frame: pd.DataFrame, columns: list[str]) -> list[Key]:
    texts = [[None if is_missing(value) else text_key(value.item() if isinstance(value, np.generic) else value)
              for value in frame[column]] for column in columns]
    return list(zip(*texts)) if texts else []


def _show(key: Key) -> str:
    return "/".join("(empty)" if part is None else part for part in key)


def _boolean(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false, 1/0, yes/no)")


def _decimal(value: Any) -> decimal.Decimal:
    number = to_decimal(value)
    if number is None:
        raise ValueError(f"{value!r} is not a number")
    return number


def _integer(value: Any) -> int:
    number = _decimal(value)
    if number != number.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


_CONVERT: dict[str, Any] = {"string": str, "integer": _integer, "float": float, "decimal": _decimal,
                            "boolean": _boolean}
_DTYPES: dict[str, Any] = {"string": object, "integer": "Int64", "float": "float64", "decimal": object,
                           "boolean": "boolean"}
