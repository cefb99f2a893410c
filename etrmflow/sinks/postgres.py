"""The PostgreSQL sink: one table per pipeline, each batch one transaction, loaded with COPY.

psycopg (version 3) is imported when a postgres sink opens, so that installing etrmflow without
the ``postgres`` extra costs nothing until a pipeline asks for one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from etrmflow.components import BatchInfo, SinkContext
from etrmflow.errors import SinkError
from etrmflow.sinks.common import all_missing, lineage, ordered_columns, utc_now_iso
from etrmflow.sinks.pg_connect import ConnectionSpec, describe_server, scrub
from etrmflow.sinks.pg_tables import (
    LINEAGE_TYPES,
    MAX_IDENTIFIER_BYTES,
    cells,
    declared_type,
    ensure_schema,
    frame_type,
    lock_columns,
    lock_table,
    nul_explained,
    primary_key,
    q,
    qualified,
    read_columns,
    staging_run,
    stamp_staging,
    unfit_names,
    value_change,
)
from etrmflow.sinks.table import (
    IDENTIFIER,
    PARTITIONS_NEED_COLUMNS,
    TableSink,
    mode_options,
)

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

_LOAD = q("_etrmflow_load")
_ORDINAL = q("_etrmflow_ordinal")


class PostgresSink(TableSink):
    """Write rows to a PostgreSQL table: upsert on the key (default), append, replace or replace_partition.

    The table is created on the first write from the contract's column types (integer bigint,
    number double precision, a declared decimal numeric(p,s), boolean, nested values jsonb,
    timestamps that a step parsed timestamptz, other strings text) plus lineage columns
    ``_etrmflow_run_id``, ``_etrmflow_batch_id``, ``_etrmflow_page_sha256`` and
    ``_etrmflow_loaded_at``; a column that appears later is added. Each batch is one
    transaction, copied into a temporary table and merged with INSERT ... ON CONFLICT. Give the
    password with ``secret()``: a password written in the pipeline is refused.

    Example::

        sinks:
          - type: postgres
            dsn: "postgresql://etl@db.internal:5432/warehouse"
            password: "{{ secret('WAREHOUSE_PASSWORD') }}"
            schema: trading
            table: trades
            mode: upsert
            key: [trade_id, version]
    """

    type_name = "postgres"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["table"],
        "properties": {
            "dsn": {"type": "string", "minLength": 1,
                    "description": "libpq connection string or postgresql:// URI; a password in it "
                                   "must come from secret()."},
            "host": {"type": "string", "minLength": 1, "description": "Server host (overrides the dsn's)."},
            "port": {"type": ["integer", "string"], "description": "Server port (overrides the dsn's)."},
            "dbname": {"type": "string", "minLength": 1, "description": "Database (overrides the dsn's)."},
            "user": {"type": "string", "minLength": 1, "description": "User name (overrides the dsn's)."},
            "password": {"type": "string", "minLength": 1,
                         "description": "The user's password, as {{ secret('NAME') }}; default: "
                                        "libpq's PGPASSWORD or ~/.pgpass."},
            "schema": {"type": "string", "pattern": IDENTIFIER, "maxLength": MAX_IDENTIFIER_BYTES,
                       "default": "public", "description": "Schema of the table (created if missing)."},
            "table": {"type": "string", "pattern": IDENTIFIER, "maxLength": 48,
                      "description": "Table to write (created on the first write)."},
            **mode_options("the table becomes this run's rows when the run succeeds"),
        },
        **PARTITIONS_NEED_COLUMNS,
    }

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.schema: str = options.get("schema", "public")
        self._target = f"{self.table}__staging" if self.mode == "replace" else self.table
        self._db: psycopg.Connection[Any] | None = None
        self._columns: dict[str, str] = {}
        self._written: set[str] = set()
        self._server: str | None = None

    @property
    def _label(self) -> str:
        return f"postgres sink (table {self.schema}.{self.table})"

    # -- lifecycle ------------------------------------------------------------------------

    def open(self, context: SinkContext) -> None:
        super().open(context)  # the key, column types and decimals; the options checked
        self._spec = ConnectionSpec(self.options, context.secrets, self._label)
        self._db = self._spec.connect()
        try:
            ensure_schema(self._db, self.schema)
            self._claim_table()  # before anything of the table is read, dropped or written
            if self.mode == "replace":
                self._prepare_staging(context)
            self._columns = read_columns(self._db, self.schema, self._target)
            self._check_existing_table()
            if context.resume and not self._keyed() and self._columns:
                self._written = self._batches_of_this_run()
            self._index_partitions()
        except Exception as exc:
            self.close(False)
            if isinstance(exc, SinkError):
                raise
            raise SinkError(f"{self._label}: opening failed: {scrub(str(exc))}") from None
        except BaseException:
            self.close(False)
            raise

    def write(self, frame: pd.DataFrame, batch: BatchInfo) -> int:
        if self._db is None:
            raise SinkError(f"{self._label}: write before open")
        try:
            with self._db.transaction():
                self._write_rows(frame, batch)
        except Exception as exc:
            self._reread_columns()  # an ALTER TABLE was rolled back too
            raise SinkError(f"{self._label}: writing batch {batch.batch_id} failed and was rolled back: "
                            f"{scrub(nul_explained(str(exc), frame, self.key) or str(exc))}") from exc
        self._written.add(batch.batch_id)
        return len(frame)

    def close(self, ok: bool) -> None:
        if self._db is None:
            return
        try:
            if self.mode == "replace" and ok:
                self._swap_in()
            # A failed replace run keeps <table>__staging: `etrmflow run --resume` completes
            # it, and the next fresh run drops it.
        except Exception as exc:
            raise SinkError(f"{self._label}: swapping in {self._target} failed and was rolled back; "
                            f"the previous table is untouched: {scrub(str(exc))}") from exc
        finally:
            self._db.close()
            self._db = None

    def describe(self) -> str:
        # Called for every batch (it names the sink in the counts): the dsn is parsed once.
        if self._server is None:
            self._server = describe_server(self.options)
        server = f"{self._server} " if self._server else ""
        return f"postgres {server}table {self.schema}.{self.table} ({self._mode_detail()})"

    # -- checks ---------------------------------------------------------------------------

    def _claim_table(self) -> None:
        """Refuse to share the table with a run it would spoil: a replace run's open drops the
        staging table another is filling, replace_partition runs delete each other's partitions."""
        assert self._db is not None
        alone, table = self.mode in ("replace", "replace_partition"), f"{self.schema}.{self.table}"
        if not lock_table(self._db, self.schema, self.table, alone=alone):
            busy = (f"another run is writing table {table}, and mode {self.mode} must have it to itself (only "
                    f"upsert and append runs may share a table)" if alone else
                    f"a run in mode replace or replace_partition is writing table {table}, and must have it to itself")
            raise SinkError(f"{self._label}: {busy}; run this one again when that run has finished")

    def _check_existing_table(self) -> None:
        assert self._db is not None
        if not self._columns or not self._keyed():
            return
        existing = primary_key(self._db, self.schema, self._target)
        if set(existing) != set(self.key):
            raise SinkError(f"{self._label}: the table has primary key ({', '.join(existing) or 'none'}) "
                            f"but mode {self.mode} needs ({', '.join(self.key)}); drop or rename the table first")

    def _batches_of_this_run(self) -> set[str]:
        """Batches a resumed run already wrote: rewriting one must replace its rows (keyless modes)."""
        assert self._db is not None
        rows = self._db.execute(f"SELECT DISTINCT _etrmflow_batch_id FROM {self._qualified()} "
                                f"WHERE _etrmflow_run_id = %s", (self.context.run_id,)).fetchall()
        return {batch_id for (batch_id,) in rows}

    # -- schema ---------------------------------------------------------------------------

    def _qualified(self) -> str:
        return qualified(self.schema, self._target)

    def _reread_columns(self) -> None:
        import psycopg

        try:
            assert self._db is not None
            self._columns = read_columns(self._db, self.schema, self._target)
        except psycopg.Error:  # the connection may be gone; the next write reports that
            self._columns = {}

    def _wanted(self, frame: pd.DataFrame | None) -> dict[str, str]:
        """Column name -> type for the contract, the frame's extras and lineage."""
        present = {} if frame is None else {str(c): c for c in frame.columns}
        wanted = {}
        for name in ordered_columns(self._types, list(present)):
            series = frame[present[name]] if frame is not None and name in present else None
            if name in LINEAGE_TYPES:
                wanted[name] = LINEAGE_TYPES[name]
            elif name in self._types:
                wanted[name] = declared_type(self._types[name], self._decimals.get(name), series)
            elif series is not None and not self._waits_for_values(name, series):
                # A batch without a value keeps the column's type (typed by values it has none:
                # text, which a numeric column would refuse for no value's sake).
                wanted[name] = self._columns[name] if name in self._columns and all_missing(series) \
                    else frame_type(series)
        return wanted

    def _ensure_columns(self, frame: pd.DataFrame | None) -> None:
        assert self._db is not None
        wanted = self._wanted(frame)
        if any(c not in self._columns for c in wanted):
            # Another run may have made the table or the column since this one looked: wait
            # for any run changing the columns, then look again.
            lock_columns(self._db, self.schema, self._target)
            self._columns = read_columns(self._db, self.schema, self._target)
            wanted = self._wanted(frame)
        self._check_column_types(wanted, frame)
        new = [c for c in wanted if c not in self._columns]
        unfit = unfit_names(new)
        if unfit:
            raise SinkError(unfit)
        if not new:
            return
        if not self._columns:
            self._create_table(wanted)
        else:
            for column in new:
                self._db.execute(f"ALTER TABLE {self._qualified()} ADD COLUMN {q(column)} {wanted[column]}")
        self._columns = read_columns(self._db, self.schema, self._target)

    def _check_column_types(self, wanted: dict[str, str], frame: pd.DataFrame | None) -> None:
        """Refuse a batch whose values an existing column would change (round, cut) without an error."""
        present = set() if frame is None else {str(c) for c in frame.columns}
        for column in present & wanted.keys() & self._columns.keys():
            why = value_change(self._columns[column], wanted[column])
            if why:
                raise SinkError(f"column {column} is {self._columns[column]} in table {self.schema}.{self._target}, "
                                f"but its values need {wanted[column]}: {why}; change the column (ALTER TABLE "
                                f"{self._qualified()} ALTER COLUMN {q(column)} TYPE {wanted[column]}) or load "
                                f"another table")

    def _create_table(self, types: dict[str, str]) -> None:
        assert self._db is not None
        keyed = self._keyed()
        missing = [k for k in (*(self.key if keyed else ()), *self.partition_by) if k not in types]
        if missing:
            raise SinkError(f"key or partition column(s) {', '.join(missing)} are neither in contract "
                            f"'{self.context.contract.name}' nor in the batch")
        columns = [f"{q(c)} {t}" for c, t in types.items()]
        if keyed:
            columns.append(f"CONSTRAINT {q(self._target + '_pkey')} PRIMARY KEY ({', '.join(map(q, self.key))})")
        if self.mode == "replace":  # the staging table its open made, without columns
            self._db.execute(f"DROP TABLE IF EXISTS {self._qualified()}")
        self._db.execute(f"CREATE TABLE {self._qualified()} ({', '.join(columns)})")
        if self.mode == "replace":
            stamp_staging(self._db, self.schema, self._target, self.context.run_id)
        self._columns = dict(types)
        self._index_partitions()

    def _index_partitions(self) -> None:
        """replace_partition deletes by partition, batch after batch: give it an index."""
        assert self._db is not None
        if self.partition_by and all(c in self._columns for c in self.partition_by):
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {q(self._target + '_partition')} ON "
                             f"{self._qualified()} ({', '.join(map(q, self.partition_by))})")

    # -- rows -----------------------------------------------------------------------------

    def _write_rows(self, frame: pd.DataFrame, batch: BatchInfo) -> None:
        assert self._db is not None
        self._ensure_columns(frame)
        self._check_partition_columns()
        columns = list(self._columns)
        rows = self._rows(frame, columns, batch)
        rewritten = batch.batch_id in self._written and not self._keyed()
        if not self._keyed() and self.mode != "replace_partition":
            if rewritten:  # keyless rows cannot be matched: a rewritten batch replaces its own rows
                self._delete_batch(batch)
            self._copy(self._qualified(), columns, rows)
            return
        self._db.execute(f"CREATE TEMP TABLE {_LOAD} ON COMMIT DROP AS SELECT {', '.join(map(q, columns))}, "
                         f"NULL::bigint AS {_ORDINAL} FROM {self._qualified()} WITH NO DATA")
        self._copy(_LOAD, [*columns, "_etrmflow_ordinal"], (row + (i,) for i, row in enumerate(rows)))
        if self.mode == "replace_partition":
            self._delete_other_runs_partitions(batch)
        if rewritten:
            self._delete_batch(batch)
        self._db.execute(self._merge_sql(columns))

    def _rows(self, frame: pd.DataFrame, columns: list[str], batch: BatchInfo) -> Iterator[tuple[Any, ...]]:
        # Every known column is written, NULL when the batch lacks it: an upserted row must
        # not keep a value that the new version of the record no longer has.
        stamps = lineage(batch, utc_now_iso())
        present = {str(c): c for c in frame.columns}
        values = [[stamps[c]] * len(frame) if c in stamps else
                  self._cells(frame[present[c]], c) if c in present else
                  [None] * len(frame) for c in columns]
        return zip(*values)

    def _cells(self, series: pd.Series, column: str) -> list[Any]:
        try:
            return cells(series, self._columns[column], self._decimals.get(column))
        except (TypeError, ValueError) as exc:
            raise SinkError(f"column {column}: {exc}") from None

    def _copy(self, table: str, columns: list[str], rows: Iterator[tuple[Any, ...]]) -> None:
        assert self._db is not None
        with self._db.cursor() as cursor, \
                cursor.copy(f"COPY {table} ({', '.join(map(q, columns))}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _merge_sql(self, columns: list[str]) -> str:
        names = ", ".join(map(q, columns))
        if not self._keyed():
            return f"INSERT INTO {self._qualified()} ({names}) SELECT {names} FROM {_LOAD} ORDER BY {_ORDINAL}"
        key = ", ".join(map(q, self.key))
        # One row per key, the batch's last (as a loop of single upserts would leave it):
        # ON CONFLICT refuses to touch a row twice in one statement.
        source = f"SELECT DISTINCT ON ({key}) {names} FROM {_LOAD} ORDER BY {key}, {_ORDINAL} DESC"
        updates = [f"{q(c)} = EXCLUDED.{q(c)}" for c in columns if c not in self.key]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        return f"INSERT INTO {self._qualified()} ({names}) {source} ON CONFLICT ({key}) {action}"

    def _delete_batch(self, batch: BatchInfo) -> None:
        assert self._db is not None
        self._db.execute(f"DELETE FROM {self._qualified()} WHERE _etrmflow_run_id = %s AND _etrmflow_batch_id = %s",
                         (batch.run_id, batch.batch_id))

    def _delete_other_runs_partitions(self, batch: BatchInfo) -> None:
        """Rows of the batch's partitions that other runs loaded (a resumed run keeps its id)."""
        assert self._db is not None
        parts = ", ".join(map(q, self.partition_by))
        every = " AND ".join(f"p.{q(c)} IS NOT NULL" for c in self.partition_by)
        # Equality first, which the partition index serves; a partition with an empty value
        # (NULL is a partition of its own) needs IS NOT DISTINCT FROM, which no index serves.
        for where, match in ((every, "="), (f"NOT ({every})", "IS NOT DISTINCT FROM")):
            condition = " AND ".join(f"t.{q(c)} {match} p.{q(c)}" for c in self.partition_by)
            self._db.execute(f"DELETE FROM {self._qualified()} AS t USING (SELECT DISTINCT {parts} FROM {_LOAD} "
                             f"AS p WHERE {where}) AS p WHERE {condition} AND t._etrmflow_run_id IS DISTINCT "
                             f"FROM %s", (batch.run_id,))

    # -- replace --------------------------------------------------------------------------

    def _prepare_staging(self, context: SinkContext) -> None:
        """A fresh run stages into a new table named for its run (no columns yet: they come
        with the first page, typed by its values); a resumed run completes only the one its run
        began. Any other holds less than the pages the checkpoint counts as done: swapped in,
        the table would lose them."""
        assert self._db is not None
        if context.resume:
            began = staging_run(self._db, self.schema, self._target)
            if began != context.run_id:
                raise SinkError(f"{self._label}: cannot resume run {context.run_id}: its staging table "
                                f"{self.schema}.{self._target} held what the run loaded, but "
                                f"{'it is gone' if began is None else 'another run began the one there'}; run "
                                f"without --resume to load everything again (table {self.schema}.{self.table} "
                                f"stays as it is until a run succeeds)")
            return
        with self._db.transaction():
            self._db.execute(f"DROP TABLE IF EXISTS {self._qualified()}")  # a crashed run's
            self._db.execute(f"CREATE TABLE {self._qualified()} ()")
            stamp_staging(self._db, self.schema, self._target, context.run_id)

    def _swap_in(self) -> None:
        assert self._db is not None
        with self._db.transaction():
            if not self._columns:  # no batch came: the table becomes empty, with the contract's columns
                self._ensure_columns(None)
            final = qualified(self.schema, self.table)
            self._db.execute(f"DROP TABLE IF EXISTS {final}")
            self._db.execute(f"ALTER TABLE {self._qualified()} RENAME TO {q(self.table)}")
            if self._keyed():
                self._db.execute(f"ALTER TABLE {final} RENAME CONSTRAINT {q(self._target + '_pkey')} "
                                 f"TO {q(self.table + '_pkey')}")
