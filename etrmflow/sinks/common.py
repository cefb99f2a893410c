"""What every built-in sink shares: lineage columns, paths, value conversion, atomic swaps.

pandas and pyarrow are imported inside the functions that need them, so that loading the
plugin (which ``etrmflow validate`` and ``--help`` do) stays fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from etrmflow.components import BatchInfo, ContractInfo, SinkContext
from etrmflow.durable import fsync_directory
from etrmflow.errors import SinkError, write_failure
from etrmflow.sinks.cells import (
    column_values,
    decimal_cell,
    decimal_cells,
    decimal_text,
    decimal_texts,
    dumps_json,
    exact_float,
    is_missing,
    plain_value,
)
from etrmflow.validation.decimals import DecimalSpec, decimal_columns

if TYPE_CHECKING:
    import pandas as pd

__all__ = [  # the cell conversions live in etrmflow.sinks.cells; the sinks take them from here
    "LINEAGE_COLUMNS", "NESTED_TYPES", "all_missing", "column_values", "decimal_cell", "decimal_cells",
    "decimal_specs", "decimal_text", "decimal_texts", "dumps_json", "exact_decimals", "exact_float",
    "exact_texts", "is_missing", "lineage", "ordered_columns", "plain_value", "remove", "resolve_path",
    "staging_path", "storage_failures", "swap_in", "tidy_leftovers", "transaction", "utc_now_iso",
]
log = logging.getLogger("etrmflow.sink")

LINEAGE_COLUMNS: tuple[str, ...] = (
    "_etrmflow_run_id", "_etrmflow_batch_id", "_etrmflow_page_sha256", "_etrmflow_loaded_at",
)
NESTED_TYPES: frozenset[str] = frozenset({"object", "array"})
"""Contract column types whose values are stored as compact JSON text."""


def utc_now_iso() -> str:
    """Now in UTC as ISO 8601 with a ``Z`` (``2025-03-30T01:02:03.456789Z``)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lineage(batch: BatchInfo, loaded_at: str) -> dict[str, str]:
    """The lineage values stamped on every row of ``batch``."""
    return dict(zip(LINEAGE_COLUMNS, (batch.run_id, batch.batch_id, batch.page_sha256, loaded_at)))


def resolve_path(context: SinkContext, raw: str) -> Path:
    """``raw`` relative to the project folder (absolute paths are used as given)."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(context.project_dir) / path


def decimal_specs(contract: ContractInfo) -> dict[str, DecimalSpec]:
    """The contract's top-level columns declared exact decimals."""
    return decimal_columns(contract.schema)


def ordered_columns(contract_types: Mapping[str, str], frame_columns: list[str]) -> list[str]:
    """Contract columns first (contract order), then the frame's extras, lineage last."""
    extras = [c for c in frame_columns if c not in contract_types and c not in LINEAGE_COLUMNS]
    return [*contract_types, *extras, *LINEAGE_COLUMNS]


# ---------------------------------------------------------------------------------------------
# Columns the contract does not declare (drift fields, columns a step derives): typed by value
# ---------------------------------------------------------------------------------------------

def all_missing(series: pd.Series) -> bool:
    """No value at all: such a column says nothing about its type (a sink that types columns by
    their values leaves it out until a page has one)."""
    return bool(series.isna().all())


def exact_decimals(series: pd.Series) -> list[decimal.Decimal | None] | None:
    """The column as Decimals (None where missing) when it holds money a step computed: every
    cell a finite Decimal, an int or missing, and one at least a Decimal. None for any other
    column, which the sinks store as they always did."""
    if series.dtype != object:  # numbers, timestamps, strings (pandas' str dtype is no object)
        return None
    values = series.tolist()
    if decimal.Decimal not in set(map(type, values)):
        return None
    out: list[decimal.Decimal | None] = []
    for value in values:
        kind = type(value)
        if kind is decimal.Decimal and value.is_finite():
            out.append(value)
        elif kind is int:  # exact too (a literal 0 in a coalesce); never a bool
            out.append(decimal.Decimal(value))
        elif is_missing(value):
            out.append(None)
        else:
            return None
    return out


def exact_texts(series: pd.Series, column: str) -> list[str | None]:
    """A column for an exact decimal column the contract does not declare (SQLite DECIMAL_TEXT,
    text written as Decimals): each number's digits as written, never an exponent. A float
    (a page where the step gave floats) is written as its shortest repr, the number it reads
    as; anything else is refused rather than stored as a number it is not."""
    exact = exact_decimals(series)
    if exact is not None:
        return [decimal_text(value) for value in exact]
    out: list[str | None] = []
    for value in series.tolist():
        item = getattr(value, "item", None)  # numpy scalars
        value = item() if callable(item) and not isinstance(value, decimal.Decimal) else value
        if is_missing(value):
            out.append(None)
        elif type(value) is int or (type(value) is decimal.Decimal and value.is_finite()):
            out.append(decimal_text(decimal.Decimal(value)))
        elif type(value) is float and math.isfinite(value):
            out.append(decimal_text(decimal.Decimal(repr(value))))
        else:
            raise ValueError(f"{value!r} cannot go into column {column}, which holds exact decimals (an "
                             f"earlier page gave it Decimals); declare the column in the contract, or "
                             f"make the step give numbers on every page")
    return out


def decimal_scale(values: list[decimal.Decimal | None]) -> tuple[int, int]:
    """(integer digits, decimals) that hold every value exactly: Decimal('-1234.5600') needs
    (4, 4), Decimal('0.003') (0, 3), Decimal('1E+2') (3, 0)."""
    digits = scale = 0
    for value in values:
        if value is not None:
            exponent = value.as_tuple().exponent
            assert isinstance(exponent, int)  # finite: exact_decimals kept no NaN or infinity
            scale = max(scale, -exponent)
            digits = max(digits, value.adjusted() + 1)
    return digits, scale


# ---------------------------------------------------------------------------------------------
# Replace-at-close for file outputs: write to a staging path, then swap it in
# ---------------------------------------------------------------------------------------------

def staging_path(target: Path, run_id: str) -> Path:
    return target.with_name(f"{target.name}.staging-{run_id}")


def remove(path: Path) -> None:
    """Delete a file or a folder tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def tidy_leftovers(target: Path, keep: Path | None = None) -> None:
    """Clear what crashed runs left next to ``target``.

    A crash between the two renames of ``swap_in`` leaves no ``target`` but a complete
    ``target.old-*``: that is the last output a run finished, so it goes back in place. Any
    other ``.old-*`` and every ``.staging-*`` but ``keep`` (the staging of a run being resumed)
    is garbage: its run never published it.
    """
    for old in sorted(target.parent.glob(f"{target.name}.old-*")):
        if target.exists():
            log.warning("removing %s, left over from an interrupted run", old)
            remove(old)
        else:
            log.warning("restoring %s, left over from an interrupted run, to %s", old, target)
            os.replace(old, target)
    for staging in target.parent.glob(f"{target.name}.staging-*"):
        if staging == keep:
            continue
        log.warning("removing %s, left over from an interrupted run", staging)
        remove(staging)


def swap_in(staging: Path, target: Path, run_id: str) -> None:
    """Put ``staging`` where ``target`` is, each step a rename so readers never see half.

    A file replaces a file in one atomic rename. A folder cannot be renamed over a folder, so
    the old one is renamed away first (``tidy_leftovers`` mends a crash in between). What
    ``staging`` holds is synced already (each part as it was written); syncing the folder
    makes the renames durable, so a power cut never takes back a published output.
    """
    if target.is_dir():
        old = target.with_name(f"{target.name}.old-{run_id}")
        os.replace(target, old)
        os.replace(staging, target)
        fsync_directory(target.parent)
        remove(old)
    else:
        os.replace(staging, target)
        fsync_directory(target.parent)


def project_file(raw: str, project_dir: str) -> str:
    """A path option as the absolute, resolved path it names (relative to the project folder):
    what two sinks compare to tell whether they write one file (``etrmflow.config.outputs``)."""
    path = Path(raw).expanduser()
    return str((path if path.is_absolute() else Path(project_dir) / path).resolve())


def wal_connection(path: str) -> sqlite3.Connection:
    """A connection to a shared database file (the sinks', the dead letters'): autocommit (each
    batch opens its own transaction), WAL (readers query tables during a run), waiting up to 5 s
    on another writer. Turning WAL on needs the file to itself and does not wait on the busy
    handler, so two pipelines opening a new database at once would fail one with "database is
    locked": the switch is retried. synchronous stays FULL (the default): a committed batch must
    survive a power cut."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    attempts_left = _WAL_ATTEMPTS
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as exc:
            attempts_left -= 1
            if "locked" not in str(exc) or not attempts_left:
                db.close()
                raise
            time.sleep(0.05)


_WAL_ATTEMPTS = 100
"""Tries at switching a new database to WAL: 5 s at 50 ms, as long as the busy timeout."""


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """All or nothing: BEGIN IMMEDIATE (take the write lock now, not half-way), COMMIT or ROLLBACK."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def storage_failures(what: str, on_failure: Callable[[], object] = lambda: None) -> Iterator[None]:
    """A full disk or a path in the way (OSError, sqlite3.Error) inside the block becomes a
    SinkError: ``what`` failed, what the system said and how to go on. ``on_failure`` (e.g.
    closing what the block opened) runs first, whatever the exception."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        on_failure()
        raise SinkError(f"{what}: {write_failure(exc)}") from exc
    except BaseException:
        on_failure()
        raise
