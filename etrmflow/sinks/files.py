"""File sinks (Parquet and CSV): the output is replaced as a whole when a run succeeds.

Batches go to a staging folder ``<path>.staging-<run_id>``, one part file per batch named by
its batch id (a content hash), so a rewritten batch replaces its own part. ``close(ok=True)``
swaps the result in with renames; ``close(ok=False)`` leaves the previous output in place and
keeps the staging folder, so that ``etrmflow run --resume`` can complete it (a fresh run clears it).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etrmflow.components import BatchInfo, Sink, SinkContext
from etrmflow.errors import SinkError
from etrmflow.sinks.common import (
    NESTED_TYPES,
    column_values,
    decimal_cells,
    decimal_specs,
    decimal_text,
    lineage,
    ordered_columns,
    remove,
    resolve_path,
    staging_path,
    swap_in,
    tidy_leftovers,
    utc_now_iso,
)

log = logging.getLogger("etrmflow.sink")

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from etrmflow.validation.decimals import DecimalSpec


class _StagedSink(Sink):
    """Stages batches in a folder and swaps the finished output in at close."""

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self.path = resolve_path(context, self.options["path"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = staging_path(self.path, context.run_id)
        tidy_leftovers(self.path, keep=self.staging if context.resume else None)
        self._written: set[str] = set()
        if context.resume and self.staging.is_dir():
            # Continue the interrupted run's output; a batch it wrote may come again.
            self._written = {part.name.split("-")[1].split(".")[0] for part in self.staging.rglob("part-*")}
            return
        remove(self.staging)
        self.staging.mkdir()

    def write(self, frame: pd.DataFrame, batch: BatchInfo) -> int:
        try:
            if batch.batch_id in self._written:
                self._remove_part(batch.batch_id)  # a rewrite must leave no old part behind
            self._write_part(frame, batch)
        except Exception as exc:
            self._remove_part(batch.batch_id)
            self._written.discard(batch.batch_id)
            raise SinkError(f"{self.type_name} sink: writing batch {batch.batch_id} to "
                            f"{self.path} failed: {exc}") from exc
        self._written.add(batch.batch_id)
        return len(frame)

    def close(self, ok: bool) -> None:
        staging = getattr(self, "staging", None)
        if staging is None or not staging.exists():
            return
        if not ok:
            # Kept for `etrmflow run --resume`; the next fresh run clears it.
            log.info("keeping %s so that a resumed run can finish it", staging)
            return
        try:
            self._publish()
        finally:
            remove(staging)

    def _publish(self) -> None:
        swap_in(self.staging, self.path, self.context.run_id)

    def _write_part(self, frame: pd.DataFrame, batch: BatchInfo) -> None:
        raise NotImplementedError

    def _remove_part(self, batch_id: str) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------

_ARROW_TYPES = {"integer": "int64", "number": "float64", "boolean": "bool_", "string": "string"}


def _family(arrow_type: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    return "other"


def _conform(array: pa.Array, declared: str | None) -> pa.Array:
    """Cast to the contract's type so that every part file has one schema.

    pandas gives float64 for an integer column with a gap and ``null`` for an all-empty one;
    left alone, part files would disagree and the folder would not read as one dataset. A
    type a transform chose on purpose (say a string parsed into timestamps) is kept.
    """
    import pyarrow as pa

    target = getattr(pa, _ARROW_TYPES[declared])() if declared in _ARROW_TYPES else None
    if target is None:
        return array.cast(pa.string()) if _family(array.type) == "string" else array
    if array.type != target and _family(array.type) in ("null", _family(target)):
        return array.cast(target)  # safe cast: 5.5 -> int64 raises instead of truncating
    return array


def _arrow_column(series: pd.Series | None, declared: str | None, rows: int) -> pa.Array:
    import pyarrow as pa

    if series is None:
        return _conform(pa.nulls(rows), declared)
    if declared in NESTED_TYPES:
        return pa.array(column_values(series, as_json=True), pa.string())
    if series.dtype.kind == "O":  # lists and dicts become JSON text, Decimals exact floats
        return _conform(pa.array(column_values(series)), declared)
    return _conform(pa.Array.from_pandas(series), declared)


def _decimal_column(series: pd.Series | None, spec: DecimalSpec, rows: int) -> pa.Array:
    import pyarrow as pa

    arrow_type = pa.decimal128(spec.precision, spec.scale)  # exact, in every part file alike
    if series is None:
        return pa.nulls(rows, arrow_type)
    return pa.array(decimal_cells(series, spec), arrow_type)


def arrow_table(frame: pd.DataFrame, contract: dict[str, str], stamps: dict[str, str],
                decimals: Mapping[str, DecimalSpec] | None = None) -> pa.Table:
    """The batch as an Arrow table: contract columns, then extras, then lineage."""
    import pyarrow as pa

    decimals = decimals or {}
    present = {str(c): c for c in frame.columns}
    columns = {}
    for name in ordered_columns(contract, list(present)):
        series = frame[present[name]] if name in present else None
        if name in stamps:
            columns[name] = pa.array([stamps[name]] * len(frame), pa.string())
        elif name in decimals:
            columns[name] = _decimal_column(series, decimals[name], len(frame))
        else:
            columns[name] = _arrow_column(series, contract.get(name), len(frame))
    return pa.table(columns)


class ParquetSink(_StagedSink):
    """Write a Parquet dataset folder (optionally hive-partitioned), replaced when a run succeeds.

    One part file per batch, ``part-<batch_id>.parquet``. Column types follow the contract;
    nested values (lists, objects) are stored as compact JSON strings with sorted keys:
    pyarrow infers a struct or list type per batch from the values (an empty list becomes
    ``list<null>``, objects with other keys another struct), so part files would disagree on
    their schema, and JSON text is what the SQLite and CSV sinks store too. Lineage columns
    ``_etrmflow_run_id``, ``_etrmflow_batch_id``, ``_etrmflow_page_sha256`` and
    ``_etrmflow_loaded_at`` are added.

    Example::

        sinks:
          - type: parquet
            path: target/parquet/day_ahead_prices
            partition_by: [delivery_day]
            compression: zstd
    """

    type_name = "parquet"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "Output folder, relative to the project folder; replaced "
                                    "as a whole when a run succeeds."},
            "partition_by": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"type": "string", "minLength": 1},
                             "description": "Columns to partition by, hive style (col=value folders)."},
            "compression": {"enum": ["zstd", "snappy", "gzip", "brotli", "lz4", "none"],
                            "default": "zstd", "description": "Parquet compression codec."},
        },
    }

    def describe(self) -> str:
        details = [self.options.get("compression", "zstd")]
        if self.options.get("partition_by"):
            details.insert(0, f"partitioned by {', '.join(self.options['partition_by'])}")
        return f"parquet {self.options['path']} ({', '.join(details)})"

    def _write_part(self, frame: pd.DataFrame, batch: BatchInfo) -> None:
        import pyarrow.parquet as pq

        table = arrow_table(frame, self.context.contract.column_types(),
                            lineage(batch, utc_now_iso()), decimal_specs(self.context.contract))
        compression = self.options.get("compression", "zstd")
        if self.options.get("partition_by"):
            pq.write_to_dataset(table, str(self.staging), partition_cols=list(self.options["partition_by"]),
                                basename_template=f"part-{batch.batch_id}-{{i}}.parquet",
                                existing_data_behavior="overwrite_or_ignore", compression=compression)
            return
        part = self.staging / f"part-{batch.batch_id}.parquet"
        temporary = part.with_name(part.name + ".tmp")
        pq.write_table(table, str(temporary), compression=compression)
        os.replace(temporary, part)

    def _remove_part(self, batch_id: str) -> None:
        pattern = re.compile(rf"part-{re.escape(batch_id)}(-\d+)?\.parquet(\.tmp)?")
        for file in self.staging.rglob("part-*"):
            if pattern.fullmatch(file.name):
                file.unlink()


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------

def _csv_cells(series: pd.Series, declared: str | None, spec: DecimalSpec | None = None) -> list[Any]:
    if spec is not None:  # the exact digits, at the declared scale
        return [decimal_text(v) for v in decimal_cells(series, spec)]
    values = column_values(series, as_json=declared in NESTED_TYPES)
    if declared == "integer":  # pandas holds an integer column with a gap as float: 5.0 -> 5
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    return values


class CsvSink(_StagedSink):
    """Write one CSV file (header once), replaced when a run succeeds.

    Nested values are written as compact JSON with sorted keys, timestamps as ISO 8601, and
    lineage columns ``_etrmflow_run_id``, ``_etrmflow_batch_id``, ``_etrmflow_page_sha256``
    and ``_etrmflow_loaded_at`` are added. Batches are staged as parts and joined at close.

    Example::

        sinks:
          - type: csv
            path: target/csv/trades.csv
            delimiter: ";"
    """

    type_name = "csv"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "Output file, relative to the project folder; replaced "
                                    "when a run succeeds."},
            "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ",",
                          "description": "Field separator."},
        },
    }

    def open(self, context: SinkContext) -> None:
        super().open(context)
        # Batch ids in first-write order; a resumed run starts with the parts already staged.
        staged = sorted(self.staging.glob("part-*.csv"), key=lambda part: part.stat().st_mtime_ns)
        self._order: dict[str, None] = dict.fromkeys(part.name[5:-4] for part in staged)

    def describe(self) -> str:
        return f"csv {self.options['path']}"

    def _write_part(self, frame: pd.DataFrame, batch: BatchInfo) -> None:
        contract = self.context.contract.column_types()
        decimals = decimal_specs(self.context.contract)
        stamps = lineage(batch, utc_now_iso())
        present = {str(c): c for c in frame.columns}
        header = ordered_columns(contract, list(present))
        cells = [[stamps[name]] * len(frame) if name in stamps else
                 _csv_cells(frame[present[name]], contract.get(name), decimals.get(name)) if name in present else
                 [None] * len(frame) for name in header]
        part = self._part(batch.batch_id)
        temporary = part.with_name(part.name + ".tmp")
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=self._delimiter())
            writer.writerow(header)  # each part names its columns: a resumed run joins them too
            writer.writerows(zip(*cells))
        os.replace(temporary, part)
        self._order.setdefault(batch.batch_id)

    def _remove_part(self, batch_id: str) -> None:
        part = self._part(batch_id)
        remove(part)
        remove(part.with_name(part.name + ".tmp"))

    def _part(self, batch_id: str) -> Path:
        return self.staging / f"part-{batch_id}.csv"

    def _delimiter(self) -> str:
        return self.options.get("delimiter", ",")

    def _publish(self) -> None:
        # A batch whose write failed has no part; a rewritten one keeps its first position.
        parts = {b: self._columns(b) for b in self._order if b in self._written}
        seen = dict.fromkeys(c for columns in parts.values() for c in columns)
        header = ordered_columns(self.context.contract.column_types(), list(seen))
        joined = self.staging / "joined.csv"
        with joined.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, delimiter=self._delimiter())
            writer.writerow(header)
            for batch_id, columns in parts.items():
                self._append_part(out, writer, batch_id, columns, header)
            out.flush()
            os.fsync(out.fileno())
        swap_in(joined, self.path, self.context.run_id)

    def _columns(self, batch_id: str) -> list[str]:
        with self._part(batch_id).open(encoding="utf-8", newline="") as part:
            return next(csv.reader(part, delimiter=self._delimiter()))

    def _append_part(self, out: Any, writer: Any, batch_id: str, columns: list[str],
                     header: list[str]) -> None:
        with self._part(batch_id).open(encoding="utf-8", newline="") as part:
            rows = csv.reader(part, delimiter=self._delimiter())
            if columns == header:  # the usual case: copy the text as written, after its header
                part.readline()
                for chunk in iter(lambda: part.read(1 << 20), ""):
                    out.write(chunk)
                return
            next(rows)
            position = {name: i for i, name in enumerate(columns)}
            for row in rows:
                writer.writerow([row[position[name]] if name in position else None for name in header])
