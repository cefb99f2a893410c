"""What the database sinks (SQLite, PostgreSQL) share: their modes, the options that choose one,
and the checks that a mode has what it needs (a key to upsert on, columns to partition by)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrmflow.components import Sink, SinkContext
from etrmflow.errors import SinkError
from etrmflow.sinks.common import (
    LINEAGE_COLUMNS,
    all_missing,
    decimal_specs,
    project_file,
)

if TYPE_CHECKING:
    import pandas as pd

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
MODES = ("upsert", "append", "replace", "replace_partition")
_NAMES = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "minLength": 1}}


def mode_options(replace: str) -> dict[str, Any]:
    """The ``mode``, ``key`` and ``partition_by`` option schemas; ``replace`` says how this
    database's replace mode publishes the run's rows."""
    return {
        "mode": {"enum": list(MODES), "default": "upsert",
                 "description": "upsert: insert or update on the key, so a rerun adds no row; append: "
                                f"insert every row; replace: {replace}; replace_partition: the "
                                "partitions this run loads are replaced, the others kept."},
        "key": {**_NAMES, "description": "Key columns; default: the contract's primary_key."},
        "partition_by": {**_NAMES, "description": "Partition columns for mode replace_partition."},
    }


PARTITIONS_NEED_COLUMNS = {"if": {"properties": {"mode": {"const": "replace_partition"}}, "required": ["mode"]},
                           "then": {"required": ["partition_by"]}}
"""Schema clause: mode replace_partition requires partition_by (a located config error)."""


class TableSink(Sink):
    """A sink writing one table in one of ``MODES``. Subclasses set ``_label``."""

    _label: str
    _columns: dict[str, str]
    """The table's columns as they are now (read by the subclass)."""

    @classmethod
    def written_output(cls, options: Any, project_dir: str) -> tuple[str, bool]:
        """The table, and whether the run replaces it (``mode: replace``): two sinks of one run
        must not both write a table one of them replaces (``etrmflow.config.outputs``)."""
        return cls._table(options, project_dir), options.get("mode", "upsert") == "replace"

    @classmethod
    def _table(cls, options: Any, project_dir: str) -> str:
        """The table where it lives: in a database file (a ``path`` option; SQLite, whose table
        names ignore case) by the file's resolved path, on a server by its connection options."""
        path_option = cls.options_schema.get("properties", {}).get("path")
        if path_option is not None:
            path = project_file(options.get("path", path_option.get("default", "")), project_dir)
            return f"{path}#{options['table'].lower()}"
        names = ("dsn", "host", "port", "dbname", "schema")
        server = " ".join(f"{name}={options[name]}" for name in names if name in options) or "(default server)"
        return f"{server}#{options['table']}"

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.table: str = options["table"]
        self.mode: str = options.get("mode", "upsert")
        self.partition_by: tuple[str, ...] = tuple(options.get("partition_by") or ())

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self.key = self._key()
        self._types = context.contract.column_types()
        self._decimals = decimal_specs(context.contract)
        self._check_options()

    def _key(self) -> tuple[str, ...]:
        context = getattr(self, "context", None)
        default = context.contract.primary_key if context else ()
        return tuple(self.options.get("key") or default)

    def _keyed(self) -> bool:
        """Rows are identified by the key: every mode but append, when there is a key."""
        return self.mode != "append" and bool(self.key)

    def _mode_detail(self) -> str:
        """E.g. ``upsert on trade_id, version``, for ``describe``."""
        key = self._key() if self.mode != "append" else ()
        detail = f"{self.mode} on {', '.join(key)}" if key else self.mode
        if self.partition_by and self.mode == "replace_partition":
            detail += f", partitions {', '.join(self.partition_by)}"
        return detail

    def _undeclared(self, column: str) -> bool:
        """A column typed by its values: neither the contract's, nor lineage, key or partition."""
        return (column not in self._types and column not in LINEAGE_COLUMNS and column not in self.key
                and column not in self.partition_by)

    def _waits_for_values(self, column: str, series: pd.Series) -> bool:
        """An undeclared column the table lacks, without a value in this batch: it is added by
        the first batch that has one, typed by those values (a first page without fees would
        otherwise make a money column text). Nothing is lost: every value so far is empty."""
        return column not in self._columns and self._undeclared(column) and all_missing(series)

    def _check_options(self) -> None:
        if self.mode == "upsert" and not self.key:
            raise SinkError(f"{self._label}: mode upsert needs a key, but contract '{self.context.contract.name}' "
                            f"has no primary_key and the sink has no 'key' option; add one of them or use "
                            f"mode: append")
        if self.mode == "replace_partition" and not self.partition_by:
            raise SinkError(f"{self._label}: mode replace_partition needs partition_by: [columns]")
        if self.partition_by and self.mode != "replace_partition":
            raise SinkError(f"{self._label}: partition_by is only used by mode replace_partition; "
                            f"remove it or set mode: replace_partition")

    def _check_partition_columns(self) -> None:
        absent = [c for c in self.partition_by if c not in self._columns]
        if absent:
            raise SinkError(f"partition column(s) {', '.join(absent)} are neither in the table, nor in "
                            f"contract '{self.context.contract.name}', nor in the batch")
