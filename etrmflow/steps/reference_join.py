"""Enrich rows from reference data: a CSV file or an SQLite table (``join``).

The reference is read once, at the step's first batch, and kept for the run. A key part the
frame holds as text is compared as text (``etrmflow.validation.reference.text_key``: exactly, a
reference number in its shortest form), so ids such as ``007`` and ``7`` stay apart; a part the
frame holds as a number is compared by value with the reference's number or numeric text, so
``7``, ``7.0`` and the CSV texts ``7`` and ``7.00`` match.
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
from etrmflow.validation.reference import (
    number_text,
    project_file,
    read_csv,
    text_key,
    to_decimal,
)

_NAME = {"type": "string", "minLength": 1}
_NAMES = {"type": "array", "minItems": 1, "items": _NAME}
_NAME_MAP = {"type": "object", "minProperties": 1, "additionalProperties": _NAME}
_TYPES = ("string", "integer", "float", "decimal", "boolean")
_SHOWN_KEYS = 5
_PLAIN_DIGITS = 40  # a key number with a larger exponent is shown as 1E+400, not as 400 digits

Key = tuple[str | None, ...]
Part = str | decimal.Decimal | None
"""A frame key part: text (a boolean as true/false) compares as text, a Decimal by value."""


class Join(Transform):
    """Bring columns in from reference data, a CSV file or an SQLite table, matched on key columns.

    ``on`` lists the key columns (the same names on both sides) or maps each frame column to
    the reference column it matches: ``{cpty_lei: lei}``. ``columns`` lists the reference
    columns to bring in, or maps each to a new name. A key the frame holds as a number matches
    the reference's number or text of equal value: ``7``, ``7.0`` and the CSV texts ``7``,
    ``7.00`` and ``07`` match each other. A key the frame holds as text matches the same text
    exactly (a reference number as its shortest text), so ``"007"`` and ``"7"`` stay two keys.
    A number that equals two reference keys (``7`` and ``7.00``) fails the step rather than
    pick one. CSV values arrive as text (empty cells empty); ``types`` converts brought-in
    columns to ``integer``, ``float``, ``decimal`` (exact, for money), ``boolean`` or ``string``.

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
        self._reference: _Reference | None = None
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
        matches = [reference.matches(key) for key in keys]
        self._refuse_ambiguous(frame, keys, matches)
        found = [reference.values(rows[0]) if rows else None for rows in matches]
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

    def reference(self) -> _Reference:
        """The reference rows by key, read at the first call and kept."""
        if self._reference is None:
            try:
                rows = self._read_file() if "file" in self.options else self._read_table()
            except ValueError as exc:
                raise StepError(f"{self.type_name}: {exc}") from None
            except sqlite3.Error as exc:  # e.g. the file is no SQLite database
                raise StepError(f"{self.type_name}: cannot read {self.source}: {exc}") from None
            self._reference = _Reference(rows, len(self.on), self.type_name, self.source)
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

    def _refuse_ambiguous(self, frame: pd.DataFrame, keys: list[tuple[Part, ...]], matches: list[list[int]]) -> None:
        """A key whose number equals two reference keys (7 and 7.00) fails: picking one would guess."""
        position = next((p for p, rows in enumerate(matches) if len(rows) > 1), None)
        if position is None:
            return
        places = " and ".join(self.reference().place(row) for row in matches[position])
        raise StepError(f"{self.type_name}: key {_show(keys[position])} ({row_names(frame, [position])}) equals "
                        f"{len(matches[position])} keys of {self.source} as a number ({places}); a join must not "
                        f"guess, so make those keys distinct numbers, or cast the key column to string to match "
                        f"the text exactly")

    def _describe(self, frame: pd.DataFrame, keys: list[Key], positions: list[int]) -> str:
        shown = ", ".join(f"{_show(keys[p])} ({row_names(frame, [p])})" for p in positions[:_SHOWN_KEYS])
        return shown + (f" and {len(positions) - _SHOWN_KEYS} more" if len(positions) > _SHOWN_KEYS else "")


def _unmatched_counter(options: Mapping[str, Any]) -> str | None:
    if options.get("how") == "inner":
        return "unmatched_dropped"
    return None if options.get("unmatched", "error") == "error" else "unmatched_kept"


class _Reference:
    """The reference rows, found by a frame key: text parts exactly, number parts by value."""

    def __init__(self, rows: list[tuple[str, tuple[Any, ...]]], width: int, step: str, source: str) -> None:
        self.rows = rows
        self.width = width
        self.exact: dict[tuple[Part, ...], int] = {}  # every part as text: distinct this way
        self.by_value: dict[tuple[bool, ...], dict[tuple[Part, ...], list[int]]] = {}
        for number, (place, row) in enumerate(rows):
            key = tuple(text_key(value) for value in row[:width])
            if None in key:  # an empty key cell matches nothing (an empty frame key never matches)
                continue
            if key in self.exact:
                raise StepError(f"{step}: key {_show(key)} is in {source} twice ({rows[self.exact[key]][0]} and "
                                f"{place}); a join must not multiply rows, so each key may appear only once")
            self.exact[key] = number

    def matches(self, key: tuple[Part, ...]) -> list[int]:
        """The reference rows ``key`` matches: none, one, or (a number equal to two reference
        keys, such as 7 and 7.00) several."""
        if None in key:
            return []
        numbers = tuple(isinstance(part, decimal.Decimal) for part in key)
        if not any(numbers):
            found = self.exact.get(key)
            return [] if found is None else [found]
        return self._by_value(numbers).get(key, [])

    def values(self, row: int) -> tuple[Any, ...]:
        """The brought-in values of reference row ``row``."""
        return self.rows[row][1][self.width:]

    def place(self, row: int) -> str:
        """Where reference row ``row`` is: its CSV line or table row."""
        return self.rows[row][0]

    def _by_value(self, numbers: tuple[bool, ...]) -> dict[tuple[Part, ...], list[int]]:
        """The reference rows by key, the parts flagged in ``numbers`` read as numbers (a cell
        that is no number matches no number), built the first time a frame key asks."""
        if numbers not in self.by_value:
            index: dict[tuple[Part, ...], list[int]] = {}
            for number in self.exact.values():
                cells = self.rows[number][1][:self.width]
                key = tuple(to_decimal(cell) if numeric else text_key(cell) for cell, numeric in zip(cells, numbers))
                if None not in key:
                    index.setdefault(key, []).append(number)
            self.by_value[numbers] = index
        return self.by_value[numbers]


def _frame_keys(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Part, ...]]:
    parts = [[_frame_part(value) for value in frame[column]] for column in columns]
    return list(zip(*parts)) if parts else []


def _frame_part(value: Any) -> Part:
    """A frame key value as the join compares it: a number (not a boolean) by value, anything
    else as its text; None for an empty value, or one that never matches (NaN, a list)."""
    if is_missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return to_decimal(value)
    return text_key(value)


def _show(key: tuple[Part, ...]) -> str:
    return "/".join("(empty)" if part is None else _part_text(part) for part in key)


def _part_text(part: str | decimal.Decimal) -> str:
    if isinstance(part, str):
        return part
    return number_text(part) if abs(part.adjusted()) <= _PLAIN_DIGITS else str(part)


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
