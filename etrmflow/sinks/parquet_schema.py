"""One schema for every part file of a Parquet dataset, made when a run publishes it.

Each batch is one part file, typed by its own rows. A column the contract does not declare (a
drift field, a column a step derives) is missing from the parts of pages that lacked it, empty
(Arrow ``null``) in pages where it had no value, and a column of computed money has the scale
of its page's values. Dataset readers (``pyarrow.dataset``, ``pandas.read_parquet`` on the
folder) take the schema of the first part they list (part names are batch-id hashes): a column
that part lacks is dropped from the whole read, and a part whose column has another type fails
it. So before the sink publishes, it works out the one schema of every part the published folder
will hold and rewrites the parts that differ: a missing column is added empty, and a type is
widened only where every value stays what it is:

* ``null`` (no value) takes any type;
* decimals take the larger scale and integer digits (``decimal128(38, 2)`` and
  ``decimal128(38, 6)`` give ``decimal128(38, 6)``), integers join decimals as exact digits;
* integers of different widths give ``int64``; integers and floats give ``float64`` (an
  integer beyond 2**53, which a double would round, fails the cast);
* timestamps in one time zone take the finer unit.

Any other pair (text and numbers, floats and decimals, ...) is an error naming the column, the
two types and a part of each, before any file is rewritten: no type holds both without changing
a value. Parts are rewritten one record batch at a time (bounded memory) into a hidden file
that replaces the part by a rename, so a reader sees the old or the new part, never half.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from etrmflow.errors import SinkError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("etrmflow.sink")

MAX_DECIMAL_DIGITS = 38
"""decimal128's precision limit."""
_REWRITING = ".rewriting-"
"""Prefix of a part being rewritten: dataset readers skip names starting with a dot."""
_UNITS = ("s", "ms", "us", "ns")


def common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type that holds every value of both without changing one, or None."""
    import pyarrow as pa

    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if _exact(a) and _exact(b):
        if pa.types.is_integer(a) and pa.types.is_integer(b):  # a uint64 and a signed one: no int64
            return pa.int64() if all(_signed(t) or t.bit_width < 64 for t in (a, b)) else None
        scale = max(_scale(a), _scale(b))
        digits = max(_integer_digits(a), _integer_digits(b)) + scale
        return pa.decimal128(min(digits, MAX_DECIMAL_DIGITS), scale) if scale <= MAX_DECIMAL_DIGITS else None
    if _real(a) and _real(b):
        return pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz:
        return pa.timestamp(max(a.unit, b.unit, key=_UNITS.index), a.tz)
    if {a, b} == {pa.string(), pa.large_string()}:
        return pa.large_string()
    return None


def _exact(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_decimal128(t)


def _real(t: pa.DataType) -> bool:
    """A number a float64 holds: floats, and integers (the cast refuses those beyond 2**53)."""
    import pyarrow as pa

    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _signed(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_signed_integer(t))


def _scale(t: pa.DataType) -> int:
    import pyarrow as pa

    return int(t.scale) if pa.types.is_decimal(t) else 0


def _integer_digits(t: pa.DataType) -> int:
    import pyarrow as pa

    if pa.types.is_decimal(t):
        return int(t.precision - t.scale)
    return len(str(2 ** t.bit_width - 1 if not _signed(t) else 2 ** (t.bit_width - 1)))


def unified_schema(parts: Iterable[Path], order: Callable[[list[str]], list[str]],
                   advice: str) -> tuple[pa.Schema, dict[Path, pa.Schema]]:
    """The schema every part should have (columns in ``order``), and each part's own.

    Raises SinkError, naming a column, its two types and a part of each, when no type holds
    both; ``advice`` says how to fix that.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = {part: pq.read_schema(part) for part in parts}
    types: dict[str, pa.DataType] = {}
    where: dict[str, Path] = {}
    for part, schema in schemas.items():
        for field in schema:
            known = types.get(field.name)
            if known is None:
                types[field.name], where[field.name] = field.type, part
                continue
            common = common_type(known, field.type)
            if common is None:
                raise SinkError(f"column {field.name} is {known} in part {where[field.name].name} but "
                                f"{field.type} in part {part.name}: no type holds both without changing "
                                f"values, so the folder would not read as one dataset; {advice}")
            types[field.name] = common
    return pa.schema([pa.field(name, types[name]) for name in order(list(types))]), schemas


def part_schema(unified: pa.Schema, part: Path, root: Path) -> pa.Schema:
    """What ``part`` should hold: the unified columns but its hive partition keys (a part under
    ``area=DE/`` has no area column: readers take it from the folder name)."""
    import pyarrow as pa

    keys = {folder.split("=", 1)[0] for folder in part.relative_to(root).parent.parts if "=" in folder}
    return pa.schema([field for field in unified if field.name not in keys]) if keys else unified


def needs_rewrite(schema: pa.Schema, wanted: pa.Schema) -> bool:
    """A part lacking a column, or holding one in another type (column order does not matter:
    readers find columns by name)."""
    mine = {field.name: field.type for field in schema}
    return any(mine.get(field.name) != field.type for field in wanted)


def rewrite(part: Path, unified: pa.Schema, compression: str, advice: str) -> None:
    """Rewrite ``part`` with ``unified``'s columns: missing ones empty, others cast safely."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    temporary = part.with_name(f"{_REWRITING}{part.name}")
    try:
        with pq.ParquetFile(part) as source, pq.ParquetWriter(temporary, unified, compression=compression) as out:
            for batch in source.iter_batches():
                out.write_batch(pa.RecordBatch.from_arrays(
                    [_conformed(batch, field, part, advice) for field in unified], schema=unified))
        os.replace(temporary, part)
    finally:
        temporary.unlink(missing_ok=True)


def _conformed(batch: pa.RecordBatch, field: pa.Field, part: Path, advice: str) -> pa.Array:
    import pyarrow as pa

    index = batch.schema.get_field_index(field.name)
    if index < 0:
        return pa.nulls(batch.num_rows, field.type)
    column = batch.column(index)
    if column.type == field.type:
        return column
    try:
        return column.cast(field.type)  # safe: refuses what it would round, cut or overflow
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SinkError(f"column {field.name} of part {part.name} is {column.type}, and the other parts "
                        f"need {field.type}, which cannot hold its values unchanged ({exc}); {advice}") from None


def remove_rewrites(folder: Path) -> None:
    """Parts a killed run was rewriting: the part itself is whole (old or new), the copy is not."""
    if folder.is_dir():
        for leftover in folder.rglob(f"{_REWRITING}part-*"):
            log.warning("removing %s, left over from an interrupted run", leftover)
            leftover.unlink(missing_ok=True)
