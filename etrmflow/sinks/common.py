"""What every built-in sink shares: lineage columns, paths, value conversion, atomic swaps.

pandas and pyarrow are imported inside the functions that need them, so that loading the
plugin (which ``etrmflow validate`` and ``--help`` do) stays fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from etrmflow.components import BatchInfo, ContractInfo, SinkContext
from etrmflow.validation.decimals import (
    DecimalSpec,
    decimal_columns,
    decimal_problem,
    to_decimal,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("etrmflow.sink")

LINEAGE_COLUMNS: tuple[str, ...] = (
    "_etrmflow_run_id", "_etrmflow_batch_id", "_etrmflow_page_sha256", "_etrmflow_loaded_at",
)
NESTED_TYPES: frozenset[str] = frozenset({"object", "array"})
"""Contract column types whose values are stored as compact JSON text."""

_SCALAR_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY


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


def exact_float(value: decimal.Decimal) -> float:
    """The float equal to ``value``; refuses (ValueError) rather than round money silently."""
    number = float(value)
    if not value.is_finite() or decimal.Decimal(repr(number)) != value:
        raise ValueError(f"decimal {value} cannot be stored as a float without rounding; "
                         f"declare the column as a string in the contract to keep every digit")
    return number


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return exact_float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def dumps_json(value: Any) -> str:
    """Compact JSON with sorted keys, so that equal values always give equal text."""
    return orjson.dumps(value, default=_json_default, option=_SCALAR_JSON_OPTIONS).decode()


def is_missing(value: Any) -> bool:
    """None, NaN, pandas NA or NaT (never true for a list or dict, even an empty one)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    # By name, so this hot path needs no pandas import: pd.NA and pd.NaT are singletons.
    return type(value).__name__ in ("NAType", "NaTType")


def plain_value(value: Any) -> Any:
    """One cell as a Python scalar a database driver or CSV writer takes (None for missing)."""
    if is_missing(value):
        return None
    if isinstance(value, (list, dict, tuple)):
        return dumps_json(value)
    if isinstance(value, decimal.Decimal):
        return exact_float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else value


def column_values(series: pd.Series, *, as_json: bool = False) -> list[Any]:
    """A column as a list of Python scalars, None for every missing value.

    ``tolist()`` does the conversion in C for plain numpy dtypes (the bulk of the data); only
    object, string and extension columns are looked at cell by cell. ``as_json`` stores every
    non-missing value as JSON text.
    """
    import numpy as np

    values = series.tolist()
    if as_json:
        return [None if is_missing(v) else dumps_json(v) for v in values]
    kind = series.dtype.kind
    native = isinstance(series.dtype, np.dtype)
    if native and kind in "biu":
        return values  # tolist() already gave Python ints and bools, with no missing values
    if native and kind == "f":
        return [None if v != v else v for v in values]
    return [plain_value(v) for v in values]


# ---------------------------------------------------------------------------------------------
# Declared decimals (x-etrmflow-decimal): stored exactly, or the write fails
# ---------------------------------------------------------------------------------------------

def decimal_specs(contract: ContractInfo) -> dict[str, DecimalSpec]:
    """The contract's top-level columns declared exact decimals."""
    return decimal_columns(contract.schema)


def decimal_cell(value: Any, spec: DecimalSpec) -> decimal.Decimal | None:
    """A value of a declared decimal column as a Decimal at the declared scale (None if
    missing). Raises ValueError rather than round: a value with more decimals than the scale
    (a transform may have computed one), or a float of more than 15 significant digits;
    TypeError for a value that is no number."""
    if is_missing(value):
        return None
    item = getattr(value, "item", None)  # numpy scalars, from a transform
    value = item() if callable(item) else value
    if isinstance(value, bool) or not isinstance(value, (decimal.Decimal, int, float)):
        raise TypeError(f"{value!r} is not a number, and the contract declares a decimal"
                         f"({spec.precision},{spec.scale}) column")
    problem = decimal_problem(value, spec)
    if problem:
        raise ValueError(f"{problem}; refusing to round money")
    return to_decimal(value, spec)


def decimal_cells(series: pd.Series, spec: DecimalSpec) -> list[decimal.Decimal | None]:
    return [decimal_cell(value, spec) for value in series.tolist()]


def decimal_text(value: decimal.Decimal | None) -> str | None:
    """Plain positional digits, never an exponent: Decimal('1E+2') at scale 2 is '100.00'."""
    return None if value is None else format(value, "f")


def ordered_columns(contract_types: Mapping[str, str], frame_columns: list[str]) -> list[str]:
    """Contract columns first (contract order), then the frame's extras, lineage last."""
    extras = [c for c in frame_columns if c not in contract_types and c not in LINEAGE_COLUMNS]
    return [*contract_types, *extras, *LINEAGE_COLUMNS]


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
    the old one is renamed away first (``tidy_leftovers`` mends a crash in between).
    """
    if target.is_dir():
        old = target.with_name(f"{target.name}.old-{run_id}")
        os.replace(target, old)
        os.replace(staging, target)
        _fsync_dir(target.parent)
        remove(old)
    else:
        os.replace(staging, target)
        _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    # Renames are only durable once the folder entry is on disk (POSIX; a no-op elsewhere).
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

