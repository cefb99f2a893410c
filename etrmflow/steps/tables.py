"""Reference data in an SQLite table, read the same way by ``join`` and ``reconcile``: the
database is opened read-only, and the table and every wanted column are checked before a row is
read, so a typo is reported with the columns the table has."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def table_rows(path: Path, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """The ``columns`` of every row of ``table``, one tuple at a time (ValueError when the table
    or a column is missing; sqlite3.Error when the file is no database)."""
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        names = [row[1] for row in db.execute(f"PRAGMA table_info({quoted(table)})")]
        if not names:
            raise ValueError(f"{path} has no table {table!r}")
        absent = [c for c in columns if c not in names]
        if absent:
            raise ValueError(f"table {table!r} in {path} has no column {', '.join(map(repr, absent))} "
                             f"(its columns: {', '.join(names)})")
        yield from db.execute(f"SELECT {', '.join(map(quoted, columns))} FROM {quoted(table)}")


def quoted(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'
