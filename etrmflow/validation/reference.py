"""Reading reference data (CSV files, SQLite tables) and looking record values up in it.

Shared by the ``reference_data`` and ``curve_snapshot`` validators. Everything here runs once,
when a validator is built, except ``Field.get``, ``text_key`` and ``to_decimal``, which run per
record and are kept cheap.
"""

from __future__ import annotations

import contextlib
import csv
import decimal
import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MISSING = object()
"""What ``Field.get`` returns when the record has no value at the field."""


@dataclass(frozen=True, slots=True)
class Field:
    """A record field named by its top-level name (``price``) or a JSON pointer (``/legs/0/price``)."""

    pointer: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Field:
        if not text.startswith("/"):
            return cls(pointer="/" + text.replace("~", "~0").replace("/", "~1"), parts=(text,))
        parts = tuple(part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/"))
        return cls(pointer=text, parts=parts)

    def get(self, record: Any) -> Any:
        """The value at the field, or ``MISSING``; null counts as missing."""
        value = record
        for part in self.parts:
            if isinstance(value, dict):
                value = value.get(part, MISSING)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
            if value is MISSING:
                return MISSING
        return MISSING if value is None else value


def to_decimal(value: Any) -> decimal.Decimal | None:
    """A finite number as a Decimal equal to what was sent (a float through its shortest repr,
    so 0.1 is 0.1, not 0.1000000000000000055...), or None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return decimal.Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, int):
        return decimal.Decimal(value)
    if isinstance(value, str):
        try:
            number = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            return None
        return number if number.is_finite() else None
    if isinstance(value, decimal.Decimal):
        return value if value.is_finite() else None
    return None


def number_text(number: decimal.Decimal) -> str:
    """The shortest exact decimal text of a number: ``7``, ``0.1``, ``-12.5``; never an exponent."""
    return "0" if number.is_zero() else format(number.normalize(), "f")


def text_key(value: Any) -> str | None:
    """How a value is compared with reference data, which is mostly CSV text: a string as it
    is, a number in its shortest decimal form (``7``, ``7.0`` and ``Decimal("7.00")`` all give
    ``"7"``), a boolean as ``true``/``false``; None for objects and arrays, which never match."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        number = to_decimal(value)
        return None if number is None else number_text(number)
    return None


def project_file(project_dir: str, raw: str, what: str) -> Path:
    """``raw`` relative to the project folder; ValueError naming the path when it is no file."""
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else Path(project_dir) / path
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    return path


def read_csv(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, tuple[str, ...]]]:
    """``(line number, cells of columns)`` for each row of a CSV file with a header line.

    UTF-8, with or without the byte-order mark spreadsheets write. ValueError names the path
    and the header when a column is missing.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path} has no column {', '.join(map(repr, missing))} "
                             f"(its header: {', '.join(header) or 'none'})")
        where = [header.index(c) for c in columns]
        for row in reader:
            if any(cell.strip() for cell in row):  # a blank line is no row
                yield reader.line_num, tuple(row[i] if i < len(row) else "" for i in where)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_sqlite_column(path: Path, table: str, column: str) -> set[str]:
    """The distinct non-null values of ``table.column``, as ``text_key`` gives them.

    The database is opened read-only, so a wrong path can never create an empty one.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        found = db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                           (table,)).fetchone()
        if found is None:
            raise ValueError(f"{path} has no table {table!r}")
        names = [row[1] for row in db.execute(f"PRAGMA table_info({_q(table)})")]
        if column not in names:
            raise ValueError(f"table {table!r} in {path} has no column {column!r} (its columns: {', '.join(names)})")
        rows = db.execute(f"SELECT DISTINCT {_q(column)} FROM {_q(table)} WHERE {_q(column)} IS NOT NULL")
        return {key for (value,) in rows if (key := text_key(value)) is not None}
