"""PostgreSQL column types and cell values for the postgres sink, and the catalog reads it needs.

Types follow the contract: integer -> bigint, number -> double precision, an exact decimal
(``x-etrmflow-decimal``) -> numeric(p,s), boolean -> boolean, object and array -> jsonb, string
-> text, except that a column the steps turned into timestamps (``parse_timestamps``) is
timestamptz when its values carry a time zone (timestamp when they do not). Cells go to the
server as text through COPY, and the server parses them into the column's type, so values are
converted here only where the text would be wrong: money stays Decimal, nested values become
JSON, and an integer that pandas holds as a float (a column with a gap) becomes an int again.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import re
from typing import TYPE_CHECKING, Any

from etrmflow.sinks.common import (
    column_values,
    decimal_cells,
    decimal_text,
    dumps_json,
    exact_decimals,
    exact_float,
    is_missing,
)

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from etrmflow.validation.decimals import DecimalSpec

MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL cuts longer names silently; the sink refuses them instead."""

LINEAGE_TYPES = {"_etrmflow_run_id": "text", "_etrmflow_batch_id": "text", "_etrmflow_page_sha256": "text",
                 "_etrmflow_loaded_at": "timestamp with time zone"}

# Names as format_type() spells them, so that a created column compares equal to one read back.
_CONTRACT_TYPES = {"integer": "bigint", "number": "double precision", "boolean": "boolean",
                   "string": "text", "object": "jsonb", "array": "jsonb"}
_INTEGER_TYPES = frozenset({"bigint", "integer", "smallint"})


def q(name: str) -> str:
    """Quote an identifier: column names come from vendor data and may hold anything."""
    return '"' + name.replace('"', '""') + '"'


def _datetime_type(series: pd.Series) -> str:
    aware = getattr(series.dtype, "tz", None) is not None
    return "timestamp with time zone" if aware else "timestamp without time zone"


def frame_type(series: pd.Series) -> str:
    """The column type for a frame column that the contract does not declare (one without a
    value waits for a batch that has one: see ``TableSink._waits_for_values``)."""
    if exact_decimals(series) is not None:
        return "numeric"  # unconstrained numeric: every digit of computed money, exactly
    kind = series.dtype.kind
    if kind == "M":
        return _datetime_type(series)
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "bigint"
    if kind == "f":
        return "double precision"
    first = next((v for v in series.tolist() if not is_missing(v)), None)
    if isinstance(first, bool):
        return "boolean"
    if isinstance(first, int):
        return "bigint"
    if isinstance(first, float):
        return "double precision"
    if isinstance(first, decimal.Decimal):
        return "numeric"
    if isinstance(first, (dict, list, tuple)):
        return "jsonb"
    if hasattr(first, "tzinfo") and hasattr(first, "hour"):
        return "timestamp with time zone" if first.tzinfo is not None else "timestamp without time zone"
    return "text"


def declared_type(json_type: str, spec: DecimalSpec | None, series: pd.Series | None) -> str:
    """The column type for a contract column (``series``: the frame's column, if present)."""
    if spec is not None:
        return f"numeric({spec.precision},{spec.scale})"
    if series is not None and series.dtype.kind == "M":
        return _datetime_type(series)
    if json_type == "string" and series is not None and series.dtype.kind == "O":
        found = frame_type(series)
        if found.startswith("timestamp"):  # datetimes held in an object column
            return found
    return _CONTRACT_TYPES.get(json_type, "text")


def cells(series: pd.Series, column_type: str, spec: DecimalSpec | None) -> list[Any]:
    """One frame column as the values COPY sends for a column of ``column_type``."""
    if spec is not None:
        values = decimal_cells(series, spec)
        if column_type.startswith("numeric"):
            return values
        if column_type == "double precision":  # a table made before the column was declared decimal
            return [None if v is None else exact_float(v) for v in values]
        return [decimal_text(v) for v in values]
    if column_type in ("jsonb", "json"):
        return column_values(series, as_json=True)
    exact = exact_decimals(series) if column_type == "text" else None
    if exact is not None:  # Decimals in a text column (made before): their digits, not a float's
        return [decimal_text(v) for v in exact]
    if column_type.startswith("numeric"):
        return [None if is_missing(v) else _exact_number(v) for v in series.tolist()]
    if column_type.startswith("timestamp") and series.dtype.kind == "M":
        _check_microseconds(series)
    values = column_values(series)
    if column_type in _INTEGER_TYPES:  # pandas holds an integer column with a gap as float: 5.0 -> 5
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    if column_type in _FLOAT_TYPES and series.dtype.kind in "iuO":
        _check_exact_floats(values, column_type)
    return values


def _check_exact_floats(values: list[Any], column_type: str) -> None:
    """Refuse an integer that the float column would round (beyond 2^53 for double precision)."""
    limit = 2 ** 53 if column_type == "double precision" else 2 ** 24
    for value in values:
        if type(value) is int and abs(value) > limit and not _float_holds(value):
            raise ValueError(f"{value} cannot be stored as {column_type} without rounding; declare the "
                             f"column an integer, or an exact decimal (x-etrmflow-decimal), in the contract")


def _check_microseconds(series: pd.Series) -> None:
    """Refuse nanoseconds, which a PostgreSQL timestamp (microseconds) would round away."""
    import pandas as pd

    if series.dt.unit != "ns":
        return
    ticks = series.array.asi8[series.notna().to_numpy()]
    finer = ticks[ticks % 1000 != 0]
    if len(finer):
        raise ValueError(f"{pd.Timestamp(int(finer[0]), tz=getattr(series.dtype, 'tz', None)).isoformat()} has "
                         f"nanoseconds, which a PostgreSQL timestamp cannot hold (it keeps microseconds); "
                         f"round the column with a step, or keep it as text, rather than lose them silently")


_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_TIME_DIGITS = re.compile(r"^(?:timestamp|time)\((\d)\)")
_FLOAT_TYPES = frozenset({"double precision", "real"})


@functools.lru_cache(maxsize=256)
def value_change(existing: str, wanted: str) -> str | None:
    """How PostgreSQL would change, without an error, a value meant for a ``wanted`` column when
    it goes into an ``existing`` one of another type (a table made by hand or by an older
    contract); None when every value arrives as it is, or the server refuses the ones it cannot
    take (too many integer digits, text that is no number), which fails the batch loudly."""
    if existing == wanted:
        return None
    number = wanted.startswith("numeric") or wanted in _FLOAT_TYPES or wanted in _INTEGER_TYPES
    if number and existing == "real":
        return "it keeps about 6 significant digits (a 4-byte float), so PostgreSQL would round the values"
    declared, scale = _NUMERIC.match(wanted), _NUMERIC.match(existing)
    if scale and (declared is None or int(scale[2]) < int(declared[2])) and number and wanted not in _INTEGER_TYPES:
        digits = f"up to {declared[2]}" if declared else "any number of decimals"
        return (f"it keeps {scale[2]} decimal place{'s' if scale[2] != '1' else ''}, and the values have "
                f"{digits}: PostgreSQL would round them")
    if existing == "double precision" and wanted in _INTEGER_TYPES:
        return "it keeps integers exactly only up to 2^53, so PostgreSQL would round larger ones"
    if wanted == "text" and (existing in _FLOAT_TYPES or existing in _INTEGER_TYPES or existing.startswith("numeric")):
        return "PostgreSQL would turn text that looks like a number ('0012') into that number"
    if not wanted.startswith("timestamp"):
        return None
    if existing == "date":
        return "it holds dates: PostgreSQL would drop the time of day"
    if wanted == "timestamp with time zone" and "without time zone" in existing:
        return "it has no time zone: PostgreSQL would drop each value's UTC offset and keep its local time"
    fraction = _TIME_DIGITS.match(existing)
    if fraction and int(fraction[1]) < 6:
        return f"it keeps {fraction[1]} decimal places of a second, so PostgreSQL would round the values"
    return None


def _float_holds(value: int) -> bool:
    try:
        return float(value) == value
    except OverflowError:  # beyond any float
        return False


def _exact_number(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) and not isinstance(value, decimal.Decimal) else value


_NUL_REFUSED = ("cannot contain NUL", "\\u0000 cannot be converted")
"""How PostgreSQL (text) and its driver (jsonb) refuse a NUL character."""


def unfit_names(names: list[str]) -> str | None:
    """Why PostgreSQL cannot take some of these column names (it would cut one over 63 bytes,
    and refuses a NUL character), or None."""
    unfit = [repr(n) if "\x00" in n else n for n in names
             if len(n.encode()) > MAX_IDENTIFIER_BYTES or "\x00" in n]
    if not unfit:
        return None
    return (f"column name(s) that PostgreSQL cannot take (longer than {MAX_IDENTIFIER_BYTES} bytes, which it "
            f"would cut, or holding a NUL character): {', '.join(unfit)}; rename them with a rename step")


def nul_explained(error: str, frame: pd.DataFrame, key: tuple[str, ...]) -> str | None:
    """For a batch refused for a NUL character (every rerun would meet it again, blocking the
    feed): the cell that holds it and the ways out. Looked for only once a batch has failed."""
    if not any(mark in error for mark in _NUL_REFUSED):
        return None
    for column in frame.columns:
        for row, value in enumerate(frame[column].tolist()):
            if (isinstance(value, str) and "\x00" in value) or (
                    isinstance(value, (dict, list)) and "\\u0000" in dumps_json(value)):
                named = ", ".join(f"{k} {frame[k].iloc[row]}" for k in key if k in frame.columns)
                return (f"column {column}, row {row + 1} of the batch{f' ({named})' if named else ''} holds a "
                        f"NUL character (0x00), which PostgreSQL cannot store in text or jsonb; remove it "
                        f"with a step, or refuse such records in the contract (pattern: \"^[^\\u0000]*$\") so "
                        f"that they are quarantined and the rest loads")
    return None

# -- the catalog ------------------------------------------------------------------------------

def qualified(schema: str, table: str) -> str:
    return f"{q(schema)}.{q(table)}"


def read_columns(connection: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    """Column name -> type as format_type() spells it, in table order; {} if there is no table."""
    rows = connection.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (qualified(schema, table),)).fetchall()
    return {name: kind for name, kind in rows}


def primary_key(connection: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    """The table's primary key columns, in key order."""
    rows = connection.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.position",
        (qualified(schema, table),)).fetchall()
    return [name for (name,) in rows]


def ensure_schema(connection: psycopg.Connection[Any], schema: str) -> None:
    # Looked up first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when the
    # schema is there, and a loader account often has only the schema's own privileges.
    if connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")


# -- runs sharing a table -----------------------------------------------------------------------

def _lock_key(purpose: str, schema: str, table: str) -> int:
    """A bigint advisory lock key for ``purpose`` on one table, the same in every process."""
    digest = hashlib.sha256(f"etrmflow {purpose} {schema}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_table(connection: psycopg.Connection[Any], schema: str, table: str, *, alone: bool) -> bool:
    """Claim the table for this connection's session (until it closes); False if another run
    holds it. ``alone``: no other run may write it at all (replace, replace_partition: a second
    run would drop the first one's staging table, or delete the partitions it loaded); else
    other upsert and append runs may, whose batches commute, but no run that needs it alone."""
    function = "pg_try_advisory_lock" if alone else "pg_try_advisory_lock_shared"
    row = connection.execute(f"SELECT {function}(%s)", (_lock_key("table", schema, table),)).fetchone()
    return bool(row and row[0])


def lock_columns(connection: psycopg.Connection[Any], schema: str, table: str) -> None:
    """Wait, until this transaction ends, for any other run changing the table's columns: two
    runs creating one table (or adding one column) at once would fail one of them."""
    connection.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("columns", schema, table),))


def staging_run(connection: psycopg.Connection[Any], schema: str, table: str) -> str | None:
    """The run a staging table was begun by (its comment), '' for a table without one, None
    when there is no table."""
    row = connection.execute("SELECT obj_description(to_regclass(%s), 'pg_class'), to_regclass(%s) IS NOT NULL",
                             (qualified(schema, table), qualified(schema, table))).fetchone()
    if row is None or not row[1]:
        return None
    comment = row[0] or ""
    return comment[len(_RUN_COMMENT):] if comment.startswith(_RUN_COMMENT) else ""


def stamp_staging(connection: psycopg.Connection[Any], schema: str, table: str, run_id: str) -> None:
    """Name the run in the staging table's comment (kept through the swap's rename)."""
    connection.execute(f"COMMENT ON TABLE {qualified(schema, table)} IS "
                       f"'{(_RUN_COMMENT + run_id).replace(chr(39), chr(39) * 2)}'")


_RUN_COMMENT = "etrmflow run: "
