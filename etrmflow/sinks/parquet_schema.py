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

* ``null`` (no value) takes any type, and so does a column without a value in a part;
* decimals take the larger scale and integer digits (``decimal128(38, 2)`` and
  ``decimal128(38, 6)`` give ``decimal128(38, 6)``), integers join decimals as exact digits;
* integers of different widths give ``int64``; integers and floats give ``float64`` (an
  integer beyond 2**53, which a double would round, fails the cast);
* timestamps in one time zone take the finer unit.

Any other pair (text and numbers, floats and decimals, ...) is an error naming the column, the
two types and a part of each, before any file is rewritten: no type holds both without changing
a value. Parts are rewritten one record batch at a time (bounded memory), each into a hidden
file beside it; only once every one is written are they renamed over their parts. A value the
wider type cannot hold (30 integer digits at scale 2 next to a scale of 10, an integer beyond 2**53
next to floats) is found while writing, so it fails the run with every part as it was: in
``append`` and ``replace_partition`` modes those include parts earlier runs published, which a
reader would otherwise find half rewritten, their first part's schema no longer holding a value
of another. A reader sees each part old or new, never half.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from etrmflow.durable import fsync_directories, fsync_file
from etrmflow.errors import SinkError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

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


def unified_schema(parts: Iterable[Path], order: Callable[[list[str]], list[str]], advice: str,
                   published: Path | None = None) -> tuple[pa.Schema, dict[Path, pa.Schema]]:
    """The schema every part should have (columns in ``order``), and each part's own.

    A column without a value in a part counts as ``null`` there, whatever its type: an earlier
    publish gave it the type of the other parts' values, which says nothing about this part (a
    partition whose text a replace_partition run replaced with numbers leaves other partitions
    with an empty text column). Raises SinkError, naming a column and a part holding each of two
    types no type holds both of; ``advice`` says how to fix that. ``published``: the output
    folder, whose parts earlier runs published (said so, with what else fixes it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas: dict[Path, pa.Schema] = {}
    types: dict[str, pa.DataType] = {}
    empty: dict[str, pa.DataType | None] = {}
    """The type of a column that no part has a value in: what its empty parts have, if one."""
    seen: dict[str, dict[pa.DataType, Path]] = {}
    """Per column, each type found and the first part holding it: what a conflict names."""
    for part in parts:
        metadata = pq.read_metadata(part)
        schemas[part] = schema = metadata.schema.to_arrow_schema()
        without_values = _empty_columns(metadata)
        for field in schema:
            if field.name in without_values:
                known = empty.get(field.name, field.type)
                empty[field.name] = None if known is None else common_type(known, field.type)
                field = pa.field(field.name, pa.null())
            seen.setdefault(field.name, {}).setdefault(field.type, part)
            known = types.get(field.name)
            common = field.type if known is None else common_type(known, field.type)
            if common is None:
                raise SinkError(_conflict(field, part, seen[field.name], advice, published))
            types[field.name] = common
    for name, kind in types.items():
        if pa.types.is_null(kind):
            types[name] = empty.get(name) or kind
    return pa.schema([pa.field(name, types[name]) for name in order(list(types))]), schemas


def _empty_columns(metadata: pq.FileMetaData) -> set[str]:
    """The part's (top-level) columns in which every row is null, by its statistics."""
    nulls: dict[str, int] = {}
    unknown: set[str] = set()
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        for column in range(group.num_columns):
            chunk = group.column(column)
            statistics = chunk.statistics
            if statistics is None or not statistics.has_null_count:
                unknown.add(chunk.path_in_schema)
            else:
                nulls[chunk.path_in_schema] = nulls.get(chunk.path_in_schema, 0) + statistics.null_count
    return {name for name, count in nulls.items() if count == metadata.num_rows and name not in unknown}


def _conflict(field: pa.Field, part: Path, seen: dict[pa.DataType, Path], advice: str,
              published: Path | None) -> str:
    """What is wrong and how to fix it, naming a part of each type: one whose own type
    ``field`` conflicts with (the type built up so far may be another part's)."""
    other, where = next(((t, p) for t, p in seen.items() if common_type(t, field.type) is None),
                        next(iter(seen.items())))
    kept = [t for t, p in ((other, where), (field.type, part)) if published and p.is_relative_to(published)]
    text = (f"column {field.name} is {other} in part {_named(where, published)} but {field.type} in part "
            f"{_named(part, published)}: no type holds both without changing values, so the folder would not "
            f"read as one dataset; ")
    if kept:  # declaring the field does not change what the published parts hold
        text += (f"the published parts hold it as {kept[0]}: give the column that type in a step, or write "
                 f"the whole folder again with mode: replace; or ")
    return text + advice


def _named(part: Path, published: Path | None) -> str:
    """A part's file name, and where it is when an earlier run published it."""
    if published is not None and part.is_relative_to(published):
        return f"{part.name} (published in {published} by an earlier run)"
    return part.name


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


def rewrite(parts: dict[Path, pa.Schema], compression: str, advice: str, published: Path | None = None) -> None:
    """Rewrite each part with its schema (missing columns empty, others cast safely): every new
    version is written beside its part before any is renamed over it, so that a value a cast
    refuses leaves every part as it was. A run killed among the renames leaves a published
    folder readable: its parts had one schema, so each holds values of that type, whether the
    first part (whose schema a reader takes) is old or new; the next run finishes the others."""
    written: list[tuple[Path, Path]] = []
    try:
        for part, schema in parts.items():
            written.append((_written_beside(part, schema, compression, advice, published), part))
    except BaseException:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        raise
    # Each new version on disk before it replaces its part: a power cut after the rename must
    # find the rows, not an empty file in the part's name.
    for temporary, _ in written:
        fsync_file(temporary)
    for temporary, part in written:
        os.replace(temporary, part)
    fsync_directories(part.parent for part in parts)


def _written_beside(part: Path, schema: pa.Schema, compression: str, advice: str,
                    published: Path | None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    temporary, named = part.with_name(f"{_REWRITING}{part.name}"), _named(part, published)
    try:
        with pq.ParquetFile(part) as source, pq.ParquetWriter(temporary, schema, compression=compression) as out:
            for batch in source.iter_batches():
                out.write_batch(pa.RecordBatch.from_arrays(
                    [_conformed(batch, field, named, advice) for field in schema], schema=schema))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _conformed(batch: pa.RecordBatch, field: pa.Field, part: str, advice: str) -> pa.Array:
    import pyarrow as pa

    index = batch.schema.get_field_index(field.name)
    if index < 0:
        return pa.nulls(batch.num_rows, field.type)
    column = batch.column(index)
    if column.type == field.type:
        return column
    if column.null_count == len(column):  # no value: a column of the type (see unified_schema)
        return pa.nulls(len(column), field.type)
    try:
        return column.cast(field.type)  # safe: refuses what it would round, cut or overflow
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SinkError(f"column {field.name} of part {part} is {column.type}, and the other parts "
                        f"need {field.type}, which cannot hold its values unchanged ({exc}); {advice}") from None


def remove_rewrites(folder: Path) -> None:
    """Parts a killed run was rewriting: the part itself is whole (old or new), the copy is not."""
    if folder.is_dir():
        for leftover in folder.rglob(f"{_REWRITING}part-*"):
            log.warning("removing %s, left over from an interrupted run", leftover)
            leftover.unlink(missing_ok=True)
