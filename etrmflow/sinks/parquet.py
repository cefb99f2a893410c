"""The Parquet sink: a dataset folder, optionally hive-partitioned, published when a run succeeds.

``mode`` says how: ``replace`` (default) swaps the whole folder in; ``append`` adds this run's
part files; ``replace_partition`` replaces the partition folders this run wrote and keeps the
others (see ``etrmflow.sinks.partitions``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from etrmflow.components import BatchInfo, SinkContext
from etrmflow.durable import folders_up_to, fsync_file
from etrmflow.errors import SinkError
from etrmflow.sinks.common import (
    NESTED_TYPES,
    all_missing,
    column_values,
    decimal_cells,
    decimal_scale,
    decimal_specs,
    exact_decimals,
    lineage,
    ordered_columns,
    resolve_path,
    swap_in,
    utc_now_iso,
)
from etrmflow.sinks.files import StagedSink
from etrmflow.sinks.parquet_schema import (
    MAX_DECIMAL_DIGITS,
    needs_rewrite,
    part_schema,
    remove_rewrites,
    rewrite,
    unified_schema,
)
from etrmflow.sinks.partitions import (
    partition_folders,
    publish_partitions,
    publish_parts,
    refuse_foreign,
    refuse_null_marker,
    restore_replaced,
    unpartitioned_entries,
)

MODES = ("replace", "append", "replace_partition")

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from etrmflow.validation.decimals import DecimalSpec


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


def _undeclared_column(name: str, series: pd.Series) -> pa.Array | None:
    """A column the contract does not declare, where its values decide: none at all is Arrow
    ``null`` (publishing gives it the other parts' type), computed money exact decimals."""
    import pyarrow as pa

    if all_missing(series):
        return pa.nulls(len(series))
    exact = exact_decimals(series)
    if exact is None:
        return None
    digits, scale = decimal_scale(exact)
    if digits + scale > MAX_DECIMAL_DIGITS:
        raise ValueError(f"column {name} holds decimals that need {digits} digits before the point and "
                         f"{scale} after it, more than Parquet's decimal128 holds ({MAX_DECIMAL_DIGITS}); "
                         f"declare the column in the contract (x-etrmflow-decimal) or round it in a step")
    return pa.array(exact, pa.decimal128(MAX_DECIMAL_DIGITS, scale))  # the part's scale; widened at publish


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
        elif name not in contract and series is not None and (found := _undeclared_column(name, series)) is not None:
            columns[name] = found
        else:
            columns[name] = _arrow_column(series, contract.get(name), len(frame))
    return pa.table(columns)


class ParquetSink(StagedSink):
    """Write a Parquet dataset folder (optionally hive-partitioned), published when a run succeeds.

    One part file per batch, ``part-<batch_id>.parquet``. Column types follow the contract;
    nested values (lists, objects) are stored as compact JSON strings with sorted keys:
    pyarrow infers a struct or list type per batch from the values (an empty list becomes
    ``list<null>``, objects with other keys another struct), so part files would disagree on
    their schema, and JSON text is what the SQLite and CSV sinks store too. Lineage columns
    ``_etrmflow_run_id``, ``_etrmflow_batch_id``, ``_etrmflow_page_sha256`` and
    ``_etrmflow_loaded_at`` are added. ``mode: replace`` (default) swaps the whole folder in;
    ``append`` adds this run's part files; ``replace_partition`` replaces only the partition
    folders this run wrote.

    Example::

        sinks:
          - type: parquet
            path: target/parquet/day_ahead_prices
            partition_by: [delivery_day]
            mode: replace_partition
            compression: zstd
    """

    type_name = "parquet"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "Output folder, relative to the project folder."},
            "partition_by": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"type": "string", "minLength": 1},
                             "description": "Columns to partition by, hive style (col=value folders)."},
            "mode": {"enum": list(MODES), "default": "replace",
                     "description": "replace: the folder becomes this run's output; append: this "
                                    "run's part files are added; replace_partition: the partition "
                                    "folders this run wrote replace their old versions, the "
                                    "others are kept. Published when the run succeeds."},
            "compression": {"enum": ["zstd", "snappy", "gzip", "brotli", "lz4", "none"],
                            "default": "zstd", "description": "Parquet compression codec."},
        },
        "if": {"properties": {"mode": {"const": "replace_partition"}}, "required": ["mode"]},
        "then": {"required": ["partition_by"]},
    }

    @property
    def mode(self) -> str:
        return str(self.options.get("mode", "replace"))

    def open(self, context: SinkContext) -> None:
        target = resolve_path(context, self.options["path"])
        restore_replaced(target)  # before anything else looks at the folder
        # Said now, before anything is fetched (publishing checks again): every mode would
        # delete a stranger's files (replace) or mix parts in among them.
        refuse_foreign(target, f"parquet sink ({self.options['path']})")
        partition_by = list(self.options.get("partition_by") or ())
        if self.mode == "replace_partition":
            if not partition_by:
                raise SinkError(f"parquet sink ({self.options['path']}): mode replace_partition needs "
                                f"partition_by: [columns]")
            strangers = unpartitioned_entries(target, partition_by[0])
            if strangers:
                raise SinkError(f"parquet sink: {target} holds {', '.join(strangers[:3])}, which is not a "
                                f"{partition_by[0]}=... partition folder; replace_partition would keep it "
                                f"forever: run once with mode: replace, or remove it")
        super().open(context)

    def describe(self) -> str:
        details = [self.options.get("compression", "zstd")]
        if self.mode != "replace":
            details.insert(0, self.mode)
        if self.options.get("partition_by"):
            details.insert(0, f"partitioned by {', '.join(self.options['partition_by'])}")
        return f"parquet {self.options['path']} ({', '.join(details)})"

    def close(self, ok: bool) -> None:
        staging = getattr(self, "staging", None)
        if ok and staging is not None and staging.exists():
            self._unify_parts()  # raises before anything is published; the staging folder stays
        super().close(ok)

    def _unify_parts(self) -> None:
        """Give every part the published folder will hold one schema (see
        ``etrmflow.sinks.parquet_schema``): this run's staged parts, then the parts it keeps."""
        contract = self.context.contract
        staged = sorted(self.staging.rglob("part-*.parquet"))
        kept = self._kept_parts(staged)
        remove_rewrites(self.staging)
        if self.mode != "replace":
            remove_rewrites(self.path)
        advice = (f"declare the field in contract '{contract.name}' (a type every page is checked against) "
                  f"or convert it with a cast step; nothing was published, {self.path} is as it was")
        types = contract.column_types()
        unified, schemas = unified_schema([*staged, *kept], lambda names: [
            c for c in ordered_columns(types, names) if c in names], advice, self.path)
        wanted = {part: part_schema(unified, part, self.staging if part.is_relative_to(self.staging) else self.path)
                  for part in schemas}
        rewritten = {part: schema for part, schema in wanted.items() if needs_rewrite(schemas[part], schema)}
        rewrite(rewritten, self.options.get("compression", "zstd"), advice, self.path)  # synced

    def _kept_parts(self, staged: list[Path]) -> list[Path]:
        """Published parts that stay next to this run's: in append mode those no staged part
        replaces, in replace_partition mode those of partitions this run did not write."""
        if self.mode == "replace" or not self.path.is_dir():
            return []
        published = sorted(self.path.rglob("part-*.parquet"))
        if self.mode == "append":
            replaced = {part.relative_to(self.staging) for part in staged}
            return [part for part in published if part.relative_to(self.path) not in replaced]
        depth = len(self.options["partition_by"])
        written = {folder.parts for folder in partition_folders(self.staging, depth)}
        return [part for part in published if part.relative_to(self.path).parts[:depth] not in written]

    def _publish(self) -> None:
        refuse_foreign(self.path, "parquet sink")  # files put there while the run was fetching
        if self.mode == "append":
            publish_parts(self.staging, self.path)
        elif self.mode == "replace_partition":
            publish_partitions(self.staging, self.path, len(self.options["partition_by"]), self.context.run_id)
        else:
            swap_in(self.staging, self.path, self.context.run_id)

    def _write_part(self, frame: pd.DataFrame, batch: BatchInfo) -> set[Path]:
        import pyarrow.parquet as pq

        table = arrow_table(frame, self.context.contract.column_types(),
                            lineage(batch, utc_now_iso()), decimal_specs(self.context.contract))
        compression = self.options.get("compression", "zstd")
        if self.options.get("partition_by"):
            absent = [c for c in self.options["partition_by"] if c not in table.column_names]
            if absent:  # pyarrow would only say 'Field "venue" does not exist in schema'
                raise ValueError(f"partition column {', '.join(absent)} is neither in contract "
                                 f"'{self.context.contract.name}' nor in the batch, so its rows have no partition: "
                                 f"declare the field in the contract (required), or set it with a step (derive)")
            refuse_null_marker(table, list(self.options["partition_by"]))
            written: list[str] = []
            pq.write_to_dataset(table, str(self.staging), partition_cols=list(self.options["partition_by"]),
                                basename_template=f"part-{batch.batch_id}-{{i}}.parquet",
                                existing_data_behavior="overwrite_or_ignore", compression=compression,
                                file_visitor=lambda file: written.append(file.path))
            # Written in place, one file per partition: a torn one is a page after the checkpoint,
            # which a resume drops (see StagedSink._forget_uncommitted).
            changed: set[Path] = set()
            for file in map(Path, written):
                fsync_file(file)
                changed.update(folders_up_to(file.parent, self.staging))  # new partition folders too
            return changed
        part = self.staging / f"part-{batch.batch_id}.parquet"
        temporary = part.with_name(part.name + ".tmp")
        pq.write_table(table, str(temporary), compression=compression)
        fsync_file(temporary)  # its data before its name: the rename must never show an empty part
        os.replace(temporary, part)
        return {self.staging}

    def _remove_part(self, batch_id: str) -> set[Path]:
        pattern = re.compile(rf"part-{re.escape(batch_id)}(-\d+)?\.parquet(\.tmp)?")
        changed: set[Path] = set()
        for file in self.staging.rglob("part-*"):
            if pattern.fullmatch(file.name):
                file.unlink()
                changed.add(file.parent)
        return changed
