"""The SQLite sink: one table per pipeline, written batch by batch in transactions."""

from __future__ import annotations

import decimal
import sqlite3
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from etrmflow.components import BatchInfo, SinkContext
from etrmflow.errors import SinkError, write_failure
from etrmflow.sinks.common import (
    LINEAGE_COLUMNS,
    NESTED_TYPES,
    column_values,
    decimal_cells,
    decimal_text,
    decimal_texts,
    exact_decimals,
    exact_float,
    exact_texts,
    is_missing,
    lineage,
    ordered_columns,
    resolve_path,
    storage_failures,
    transaction,
    utc_now_iso,
    wal_connection,
)
from etrmflow.sinks.table import (
    IDENTIFIER,
    PARTITIONS_NEED_COLUMNS,
    TableSink,
    mode_options,
)

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_PATH = "target/etrmflow.db"

# number -> REAL, not NUMERIC. Vendor numbers reach us as IEEE doubles (JSON decoding gives
# floats) and REAL keeps that exact double, so 40.45 reads back as the float whose repr is
# "40.45". NUMERIC would turn 40.0 into INTEGER 40 (two storage classes in one money column)
# and keeps only 15 significant digits when it converts text. A Decimal is stored only if a
# double holds it exactly; otherwise the write fails rather than round (see exact_float).
_SQL_TYPES = {"integer": "INTEGER", "number": "REAL", "boolean": "INTEGER", "string": "TEXT",
              "object": "TEXT", "array": "TEXT"}

# A declared exact decimal (x-etrmflow-decimal) is DECIMAL_TEXT(p,s): TEXT affinity (the name
# has TEXT and no INT), so '40.50' stays as written, where NUMERIC or DECIMAL(p,s) would turn
# numeric text into a double. p and s show in PRAGMA table_info; see docs/contracts.md for
# reading the column back as Decimals and sorting it.
# A column of Decimals the contract does not declare (a step computed money) is DECIMAL_TEXT.
_DECIMAL_TYPE = "DECIMAL_TEXT({precision},{scale})"
_UNDECLARED_DECIMAL = "DECIMAL_TEXT"


def _q(name: str) -> str:
    """Quote an identifier: column names come from vendor data and may hold anything."""
    return '"' + name.replace('"', '""') + '"'


def _sql_type_of(series: pd.Series) -> str:
    """A column type for a frame column the contract does not declare: money a step computed
    (Decimals) is exact text, like a declared decimal."""
    if exact_decimals(series) is not None:
        return _UNDECLARED_DECIMAL
    kind = series.dtype.kind
    if kind in "biu":
        return "INTEGER"
    if kind == "f":
        return "REAL"
    if kind == "O":
        first = next((v for v in series.tolist() if not is_missing(v)), None)
        if isinstance(first, (bool, int)):
            return "INTEGER"
        if isinstance(first, (float, decimal.Decimal)):
            return "REAL"
    return "TEXT"  # strings, datetimes as ISO 8601, nested values as JSON


def _check_numbers(values: list[Any], declared: str) -> None:
    """Refuse what a numeric column's affinity would change without a word: text (``'0012'``
    becomes 12) and, in a REAL column, an integer beyond 2**53 (rounded to a double)."""
    kinds = set(map(type, values))
    if str in kinds:
        text = next(v for v in values if type(v) is str)
        raise ValueError(f"text {text[:40]!r} cannot go into the {declared} column: SQLite would turn text "
                         f"that looks like a number into one; declare the column a string in the contract")
    if declared != "REAL" or int not in kinds:
        return
    for value in values:
        if type(value) is int and abs(value) > 2 ** 53 and (abs(value) >= 2 ** 1024 or float(value) != value):
            raise ValueError(f"{value} cannot be stored as REAL without rounding; declare the column an "
                             f"integer, or an exact decimal (x-etrmflow-decimal), in the contract")


def _stamp(run_id: str) -> str:
    """The comment naming the run that began a staging table: SQLite keeps it in the table's
    CREATE statement (sqlite_master.sql) through ALTER TABLE and the rename at the swap."""
    return "/* etrmflow run: " + run_id.replace("*/", "* /") + " */"


class SqliteSink(TableSink):
    """Write rows to a SQLite table: upsert on the key (default), append, replace or
    replace_partition.

    The table is created on the first write from the contract's column types (nested values
    as compact JSON text with sorted keys, timestamps as ISO 8601 text) plus lineage columns
    ``_etrmflow_run_id``, ``_etrmflow_batch_id``, ``_etrmflow_page_sha256`` and
    ``_etrmflow_loaded_at``. A column that appears later is added. Each batch is one
    transaction. ``replace`` writes to ``<table>__staging`` and swaps it in only when the run
    succeeds, so a failed run leaves the previous table untouched. ``replace_partition``
    deletes, in each batch's transaction, the rows of the batch's ``partition_by`` values that
    other runs loaded, then writes the batch (upserting on the key, if there is one).

    Example::

        sinks:
          - type: sqlite
            path: target/etrmflow.db
            table: trades
            mode: upsert
            key: [trade_id, version]
    """

    type_name = "sqlite"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["table"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "default": DEFAULT_PATH,
                     "description": "Database file, relative to the project folder."},
            "table": {"type": "string", "pattern": IDENTIFIER,
                      "description": "Table to write (created on the first write)."},
            **mode_options("the table becomes this run's rows, swapped in when the run succeeds"),
        },
        **PARTITIONS_NEED_COLUMNS,
    }

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._db: sqlite3.Connection | None = None
        self._columns: dict[str, str] = {}
        self._written_batches: set[str] = set()
        self._indexed = False
        self._insert: tuple[tuple[str, ...], str] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def open(self, context: SinkContext) -> None:
        super().open(context)  # the key, column types and decimals; the options checked
        self.path = resolve_path(context, self.options.get("path", DEFAULT_PATH))
        self._target = f"{self.table}__staging" if self.mode == "replace" else self.table
        with storage_failures(f"{self._label}: cannot open {self.path}", lambda: self.close(False)):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = wal_connection(str(self.path))
            if self.mode == "replace":
                self._open_staging(context)
            self._columns = self._read_columns()
            self._check_existing_key()

    def _open_staging(self, context: SinkContext) -> None:
        """A fresh run stages into a new table stamped with its run id; a resumed run completes
        only the staging table its own run began. Any other (a later run started over and
        dropped it) holds less than the pages the checkpoint counts as done: swapped in, the
        table would lose them."""
        assert self._db is not None
        if not context.resume:
            self._db.execute(f"DROP TABLE IF EXISTS {_q(self._target)}")  # a crashed run's
            self._create_table(self._wanted(None))
            return
        found = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (self._target,)).fetchone()
        if found is None or _stamp(context.run_id) not in found[0]:
            began = "it is gone" if found is None else "another run began the one there"
            raise SinkError(f"{self._label}: cannot resume run {context.run_id}: its staging table "
                            f"{self._target} in {self.path} holds what the run loaded, but {began}; "
                            f"run without --resume to load everything again (table {self.table} "
                            f"stays as it is until a run succeeds)")

    def write(self, frame: pd.DataFrame, batch: BatchInfo) -> int:
        if self._db is None:
            raise SinkError(f"sqlite sink (table {self.table}): write before open")
        try:
            with transaction(self._db):
                self._write_rows(frame, batch)
        except Exception as exc:
            self._columns = self._read_columns()  # an ALTER TABLE was rolled back too
            self._indexed = False  # and so was a CREATE INDEX
            raise SinkError(f"sqlite sink: writing batch {batch.batch_id} to table {self.table} "
                            f"in {self.path} failed and was rolled back: {write_failure(exc)}") from exc
        self._written_batches.add(batch.batch_id)
        return len(frame)

    def close(self, ok: bool) -> None:
        if self._db is None:
            return
        try:
            if self.mode == "replace":
                self._finish_replace(ok)
        finally:
            self._db.close()
            self._db = None

    def describe(self) -> str:
        path = self.options.get("path", DEFAULT_PATH)
        return f"sqlite {path} table {self.table} ({self._mode_detail()})"

    # -- schema ---------------------------------------------------------------------------

    @property
    def _label(self) -> str:
        return f"sqlite sink (table {self.table})"

    def _table_info(self) -> list[tuple[Any, ...]]:
        """``(cid, name, type, notnull, default, pk)`` per column; empty if no table yet."""
        assert self._db is not None
        return self._db.execute(f"PRAGMA table_info({_q(self._target)})").fetchall()

    def _read_columns(self) -> dict[str, str]:
        return {name: declared for _, name, declared, *_ in self._table_info()}

    def _check_existing_key(self) -> None:
        if not self._columns or not self._keyed():
            return
        rows = sorted(self._table_info(), key=lambda row: row[5])
        existing = [name for _, name, _, _, _, pk in rows if pk]
        if set(existing) != set(self.key):
            raise SinkError(f"sqlite sink: table {self.table} in {self.path} has primary key "
                            f"({', '.join(existing) or 'none'}) but mode {self.mode} needs "
                            f"({', '.join(self.key)}); drop or rename the table first")

    def _create_table(self, types: dict[str, str]) -> None:
        keyed = self._keyed()
        missing = [k for k in self.key if k not in types] if keyed else []
        if missing:
            raise SinkError(f"key column(s) {', '.join(missing)} are neither in contract "
                            f"'{self.context.contract.name}' nor in the batch")
        columns = [f"{_q(c)} {t}{' NOT NULL' if keyed and c in self.key else ''}"
                   for c, t in types.items()]
        if keyed:  # NOT NULL too: a SQLite PRIMARY KEY alone lets NULLs in
            columns.append(f"PRIMARY KEY ({', '.join(map(_q, self.key))})")
        assert self._db is not None
        stamp = f" {_stamp(self.context.run_id)}" if self.mode == "replace" else ""
        self._db.execute(f"CREATE TABLE {_q(self._target)}{stamp} ({', '.join(columns)})")

    def _wanted(self, frame: pd.DataFrame | None) -> dict[str, str]:
        """Column name -> SQL type for the contract, the frame's extras and lineage."""
        present = {} if frame is None else {str(c): c for c in frame.columns}
        names = [c for c in ordered_columns(self._types, list(present))
                 if c not in present or not self._waits_for_values(c, frame[present[c]])]
        return {c: self._declared_type(c) if c in self._types else "TEXT" if c in LINEAGE_COLUMNS else
                self._columns.get(c) or _sql_type_of(frame[present[c]])
                for c in names}

    def _declared_type(self, column: str) -> str:
        spec = self._decimals.get(column)
        if spec is not None:
            return _DECIMAL_TYPE.format(precision=spec.precision, scale=spec.scale)
        return _SQL_TYPES.get(self._types[column], "TEXT")

    def _ensure_columns(self, frame: pd.DataFrame) -> None:
        wanted = self._wanted(frame)
        new = [c for c in wanted if c not in self._columns]
        if not new:
            return
        if not self._columns:
            self._create_table(wanted)
        else:
            assert self._db is not None
            for column in new:
                self._db.execute(f"ALTER TABLE {_q(self._target)} ADD COLUMN {_q(column)} "
                                 f"{wanted[column]}")
        self._columns = self._read_columns()

    # -- rows -----------------------------------------------------------------------------

    def _write_rows(self, frame: pd.DataFrame, batch: BatchInfo) -> None:
        assert self._db is not None
        self._ensure_columns(frame)
        columns = list(self._columns)
        rows: Iterable[tuple[Any, ...]] = self._rows(frame, columns, batch)
        if self.mode == "replace_partition":
            rows = list(rows)
            self._delete_other_runs_partitions(columns, rows, batch)
        if not self._keyed() and (batch.batch_id in self._written_batches or self.context.resume):
            # Keyless rows cannot be matched, so a batch written again (in this run, or before
            # the run was resumed) replaces its earlier rows.
            self._index_batches()
            self._db.execute(f"DELETE FROM {_q(self._target)} WHERE _etrmflow_run_id = ? "
                             f"AND _etrmflow_batch_id = ?", (batch.run_id, batch.batch_id))
        self._db.executemany(self._insert_sql(columns), rows)

    def _delete_other_runs_partitions(self, columns: list[str], rows: list[tuple[Any, ...]],
                                      batch: BatchInfo) -> None:
        """Rows of the batch's partitions that other runs loaded (a resumed run keeps its id).
        Values are compared as stored (``IS``: an empty value is a partition of its own)."""
        assert self._db is not None
        self._check_partition_columns()
        self._index_partitions()
        at = [columns.index(c) for c in self.partition_by]
        partitions = {tuple(row[i] for i in at) for row in rows}
        where = " AND ".join(f"{_q(c)} IS ?" for c in self.partition_by)
        self._db.executemany(f"DELETE FROM {_q(self._target)} WHERE {where} AND _etrmflow_run_id IS NOT ?",
                             [(*values, batch.run_id) for values in sorted(partitions, key=repr)])

    def _index_partitions(self) -> None:
        """replace_partition deletes by partition, batch after batch: give it an index."""
        if not self._indexed:
            assert self._db is not None
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {_q(self._target + '_partition')} ON "
                             f"{_q(self._target)} ({', '.join(map(_q, self.partition_by))})")
            self._indexed = True

    def _index_batches(self) -> None:
        """A resumed keyless run deletes by batch id, batch after batch: give it an index."""
        if self.context.resume:
            assert self._db is not None
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {_q(self._target + '_etrmflow_batch')} ON "
                             f"{_q(self._target)} (_etrmflow_batch_id)")

    def _insert_sql(self, columns: list[str]) -> str:
        """One statement per column set, built once: sqlite3 keeps it prepared."""
        if self._insert is not None and self._insert[0] == tuple(columns):
            return self._insert[1]
        sql = (f"INSERT INTO {_q(self._target)} ({', '.join(map(_q, columns))}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        if self._keyed():
            updates = [f"{_q(c)} = excluded.{_q(c)}" for c in columns if c not in self.key]
            action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
            sql = f"{sql} ON CONFLICT ({', '.join(map(_q, self.key))}) {action}"
        self._insert = (tuple(columns), sql)
        return sql

    def _rows(self, frame: pd.DataFrame, columns: list[str], batch: BatchInfo) -> Iterator[tuple[Any, ...]]:
        # Every known column is written, NULL when the batch lacks it: an upserted row must
        # not keep a value that the new version of the record no longer has.
        stamps = lineage(batch, utc_now_iso())
        nested = {c for c, t in self._types.items() if t in NESTED_TYPES}
        present = {str(c): c for c in frame.columns}
        cells = []
        for column in columns:
            if column in stamps:
                cells.append([stamps[column]] * len(frame))
            elif column in self._decimals and column in present:
                cells.append(self._decimal_values(column, frame[present[column]]))
            elif column in present:
                cells.append(self._values(column, frame[present[column]], column in nested))
            else:
                cells.append([None] * len(frame))
        return zip(*cells)

    def _values(self, column: str, series: pd.Series, nested: bool) -> list[Any]:
        declared = "" if column in self._types else self._columns.get(column, "")  # undeclared: by value
        if declared.upper().startswith(_UNDECLARED_DECIMAL):
            return exact_texts(series, column)
        exact = exact_decimals(series) if declared == "TEXT" else None  # Decimals in a text column
        return self._as_declared(column, column_values(series, as_json=nested)) if exact is None else \
            [decimal_text(v) for v in exact]

    def _decimal_values(self, column: str, series: pd.Series) -> list[Any]:
        if "TEXT" in self._columns.get(column, "").upper():
            return decimal_texts(series, self._decimals[column])
        # A table made before the column was declared decimal (REAL): the exact double, if any.
        return [None if v is None else exact_float(v) for v in decimal_cells(series, self._decimals[column])]

    def _as_declared(self, column: str, values: list[Any]) -> list[Any]:
        declared = self._columns.get(column)
        if declared in ("REAL", "INTEGER"):
            _check_numbers(values, declared)
            return values
        # SQLite would turn a float into TEXT (or DECIMAL_TEXT) with 15 significant digits; repr keeps them all.
        if "TEXT" not in (declared or "").upper() or float not in set(map(type, values)):
            return values
        return [repr(v) if type(v) is float else v for v in values]  # column values hold exact floats

    def _finish_replace(self, ok: bool) -> None:
        assert self._db is not None
        staging = _q(self._target)
        if not ok:  # kept for --resume to complete; the next fresh run drops it
            return
        with storage_failures(f"{self._label}: swapping in table {self.table} in {self.path}"), transaction(self._db):
            self._db.execute(f"DROP TABLE IF EXISTS {_q(self.table)}")
            self._db.execute(f"ALTER TABLE {staging} RENAME TO {_q(self.table)}")
