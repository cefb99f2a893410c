"""``reconcile``: the pipeline's rows against another dataset, key by key, every break named."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from etrmflow.engine.staging import StagingPlace, StagingStore
from etrmflow.engine.staging_codec import key_rows, object_array, sql_order
from etrmflow.engine.staging_read import read_chunks
from etrmflow.steps.common import StepError, options_object, require_columns
from etrmflow.steps.dataset import CHUNK_ROWS, DEFAULT_CHUNK_ROWS, DatasetStep, Grain
from etrmflow.steps.reconcile_data import (
    OtherSide,
    Tolerance,
    as_type_of,
    compare,
    converter,
    typed_like,
)

log = logging.getLogger("etrmflow.run")
_NAME = {"type": "string", "minLength": 1}
_LABEL = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
_TOLERANCE = {"type": "object", "additionalProperties": False, "properties": {
    "abs": {"type": "number", "minimum": 0, "description": "Largest allowed absolute difference."},
    "rel": {"type": "number", "minimum": 0, "description": "Largest allowed difference relative to the larger "
                                                          "of the two values (0.001 = 0.1 %)."},
    "column": {**_NAME, "description": "The other side's column, when its name differs."}}}


@dataclass(frozen=True, slots=True)
class _Group:
    """The rows of one key on one side: its key (staged form and values), count, first row's fields."""

    order: tuple[Any, ...]
    key: tuple[Any, ...]
    rows: int
    fields: tuple[Any, ...]
    null: bool


class Reconcile(DatasetStep):
    """Reconcile the pipeline's rows with another dataset (a CSV file or an SQLite table), key by key.

    One output row per key found on either side: the key columns, ``status`` (``matched`` or
    ``break``), ``reason`` (the breaks, ``; ``-separated, empty when matched), how many rows each
    side has for the key (``<left_name>_rows``, ``<right_name>_rows``), and for each compared
    field both values and their difference (``<field>_<left_name>``, ``<field>_<right_name>``,
    ``<field>_diff``). Reasons: ``missing_in_<right_name>``, ``missing_in_<left_name>``,
    ``duplicate_key_in_<side>`` (fields of such a key are shown, not compared),
    ``<field>_mismatch`` and ``null_key_in_<side>`` (a row with an empty key matches nothing).

    Keys match as ``join`` matches them: the other side's values are read as the pipeline's
    key types (CSV ``7`` matches the number 7). A field is within tolerance when the two values
    differ by at most ``abs``, OR by at most ``rel`` times the larger of the two (in absolute
    value); without a tolerance, values must be equal. Numbers are compared exactly. Both sides
    are staged on disk and merged in key order, chunk by chunk. Counts of matched keys and of
    breaks by reason are in run_results.json (``steps``). A whole-dataset step: see pipelines.md.

    Example::

        - type: reconcile
          file: reference/internal_executions.csv
          on: [trade_id]
          compare: {volume_mwh: {abs: 0.5, rel: 0.001}, price: {abs: 0.01}}
          left_name: broker
          right_name: internal
    """

    type_name: ClassVar[str] = "reconcile"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "file": {**_NAME, "description": "The other dataset as a CSV file (UTF-8, header line), relative "
                                         "to the project folder."},
        "database": {**_NAME, "description": "The other dataset as an SQLite database (opened read-only)."},
        "table": {**_NAME, "description": "With database: the table (or view)."},
        "on": {"oneOf": [{"type": "array", "minItems": 1, "items": _NAME},
                         {"type": "object", "minProperties": 1, "additionalProperties": _NAME}],
               "type": ["array", "object"],
               "description": "Key columns, the same on both sides, or {pipeline column: other column}."},
        "compare": {"type": "object", "additionalProperties": _TOLERANCE,
                    "description": "Fields to compare: {pipeline column: {abs, rel, column}}; {} for equality."},
        "left_name": {**_LABEL, "default": "pipeline", "description": "What the pipeline's rows are called in "
                                                                       "reasons and columns (e.g. broker)."},
        "right_name": {**_LABEL, "default": "reference", "description": "What the other dataset is called "
                                                                         "(e.g. internal)."},
        "chunk_rows": CHUNK_ROWS,
    }, ["on"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        if ("file" in options) == ("database" in options) or ("database" in options) != ("table" in options):
            raise StepError("reconcile: give the other dataset as file (a CSV file) or as database with table")
        on = options["on"]
        self.keys: dict[str, str] = dict(on) if isinstance(on, Mapping) else {name: name for name in on}
        compared = dict(options.get("compare") or {})
        self.fields = list(compared)
        self.tolerances = [Tolerance.parse(spec) for spec in compared.values()]
        self.left, self.right = options.get("left_name", "pipeline"), options.get("right_name", "reference")
        if self.left == self.right:
            raise StepError("reconcile: left_name and right_name must differ")
        clash = sorted(set(self.keys) & set(self.fields))
        if clash:
            raise StepError(f"reconcile: {', '.join(clash)} is a key; keys are matched, not compared")
        self.outputs = outputs = [*self.keys, "status", "reason", f"{self.left}_rows", f"{self.right}_rows",
                   *(f"{f}_{suffix}" for f in self.fields for suffix in (self.left, self.right, "diff"))]
        repeated = sorted({name for name in outputs if outputs.count(name) > 1})
        if repeated:
            raise StepError(f"reconcile: the output would have two columns named {', '.join(repeated)}; "
                            f"rename the key or change left_name/right_name")
        others = {**self.keys, **{f: spec.get("column", f) for f, spec in compared.items()}}
        self.other = OtherSide(file=options.get("file"), database=options.get("database"),
                               table=options.get("table"), columns=others)

    def group_key(self) -> list[str]:
        return list(self.keys)

    def output_grain(self) -> Grain:
        return Grain(key=tuple(self.keys), columns=tuple(self.outputs))

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:  # pragma: no cover - apply_chunks is the entry
        raise StepError("reconcile runs over the whole dataset only")

    def apply_chunks(self, chunks: Iterator[pd.DataFrame], scratch: Path) -> Iterator[pd.DataFrame]:
        rows = self.chunk_rows() or DEFAULT_CHUNK_ROWS
        for counter in ("keys", "matched", "breaks"):
            self.count(counter, 0)
        first = None  # the first chunk with a key: its values say how to read the other side's
        for chunk in chunks:
            require_columns(chunk, [*self.keys, *self.fields], "reconcile")
            if chunk[list(self.keys)].notna().all(axis=1).any():
                first = chunk
                break
            # rows without a key sort first and match nothing: they need no other side
            yield self._frame([self._row(group, None) for group in self._groups(iter([chunk]))], chunk)
        store = StagingStore(StagingPlace(folder=scratch, pipeline="other", run_id="reconcile"))
        try:
            self._stage_other(store, first, rows)
            ours = self._groups(itertools.chain([first], chunks) if first is not None else iter(()))
            theirs = self._groups(c.frame for c in read_chunks(store, 0, len(self.keys), rows))
            yield from self._merged(ours, theirs, first, rows)
        finally:
            store.close()
        self._log()

    def _stage_other(self, store: StagingStore, sample: pd.DataFrame | None, rows: int) -> None:
        columns = [*self.keys, *self.fields]
        convert = {c: converter(sample[c] if sample is not None else None) for c in columns}
        for number, frame in enumerate(self.other.chunks(self.project_dir, rows)):
            for column in columns:
                frame[column] = pd.Series([convert[column](v) for v in frame[column].tolist()], dtype=object)
            store.stage(0, f"part-{number}", frame, list(self.keys))

    def _groups(self, frames: Iterator[pd.DataFrame]) -> Iterator[_Group]:
        """Each key's rows, in key order (a key's rows are never split across frames)."""
        for frame in frames:
            orders = key_rows(frame, list(self.keys))
            keys = list(zip(*(frame[c].tolist() for c in self.keys)))
            fields = list(zip(*(frame[c].tolist() for c in self.fields))) if self.fields else [()] * len(frame)
            start = 0
            for end in range(1, len(frame) + 1):
                if end == len(frame) or orders[end] != orders[start]:
                    null = any(orders[start][i] is None and orders[start][i + 1] is None
                               for i in range(0, len(orders[start]), 2))
                    yield _Group(orders[start], keys[start], end - start, fields[start], null)
                    start = end

    def _merged(self, ours: Iterator[_Group], theirs: Iterator[_Group], sample: pd.DataFrame | None,
                rows: int) -> Iterator[pd.DataFrame]:
        out: list[dict[str, Any]] = []
        left, right = next(ours, None), next(theirs, None)
        while left is not None or right is not None:
            if left is not None and (left.null or right is None or sql_order(left.order) < sql_order(right.order)):
                out.append(self._row(left, None))
                left = next(ours, None)
            elif right is not None and (right.null or left is None or sql_order(right.order) < sql_order(left.order)):
                out.append(self._row(None, right))
                right = next(theirs, None)
            else:
                assert left is not None and right is not None
                out.append(self._row(left, right))
                left, right = next(ours, None), next(theirs, None)
            if len(out) >= rows:
                yield self._frame(out, sample)
                out = []
        if out:
            yield self._frame(out, sample)

    def _row(self, ours: _Group | None, theirs: _Group | None) -> dict[str, Any]:
        reasons = self._reasons(ours, theirs)
        known = ours if ours is not None else theirs
        assert known is not None
        row: dict[str, Any] = dict(zip(self.keys, known.key))
        row.update({"status": None, "reason": None, f"{self.left}_rows": ours.rows if ours else 0,
                    f"{self.right}_rows": theirs.rows if theirs else 0})
        compared = not reasons  # one row on each side: a duplicate's fields are shown, not compared
        for index, (field, tolerance) in enumerate(zip(self.fields, self.tolerances)):
            a = ours.fields[index] if ours else None
            b = as_type_of(a, theirs.fields[index]) if theirs else None
            same, diff = compare(a, b, tolerance) if compared else (True, None)
            if not same:
                reasons.append(f"{field}_mismatch")
            row.update({f"{field}_{self.left}": a, f"{field}_{self.right}": b, f"{field}_diff": diff})
        row["status"], row["reason"] = ("break" if reasons else "matched"), "; ".join(reasons) or None
        self.count("keys")
        self.count("breaks" if reasons else "matched")
        for reason in reasons:
            self.count(reason)
        return row

    def _reasons(self, ours: _Group | None, theirs: _Group | None) -> list[str]:
        """Why a key breaks, before its fields are compared (only a key with one row on each side
        and no reason yet has its fields compared)."""
        if (ours and ours.null) or (theirs and theirs.null):
            return [f"null_key_in_{self.left if ours else self.right}"]
        reasons = [f"missing_in_{side}" for side, group in ((self.left, ours), (self.right, theirs)) if group is None]
        return reasons + [f"duplicate_key_in_{side}" for side, group in ((self.left, ours), (self.right, theirs))
                          if group is not None and group.rows > 1]

    def _frame(self, rows: list[dict[str, Any]], sample: pd.DataFrame | None) -> pd.DataFrame:
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        frame = pd.DataFrame({name: object_array(values) for name, values in columns.items()})
        for side in (self.left, self.right):
            frame[f"{side}_rows"] = frame[f"{side}_rows"].astype("int64")
        frame["status"] = frame["status"].astype(str)
        for column in self.keys:
            if sample is not None:  # the key columns keep the pipeline's dtypes where they hold every key
                frame[column] = typed_like(columns[column], sample[column].dtype)
        return frame

    def _log(self) -> None:
        counts = self.counters()
        reasons = {k: v for k, v in counts.items() if k not in ("keys", "matched", "breaks")}
        detail = ", ".join(f"{name} {n}" for name, n in sorted(reasons.items()))
        log.info("reconcile %s vs %s (%s): %d key(s), %d matched, %d break(s)%s", self.left, self.right,
                 self.other.describe(), counts.get("keys", 0), counts.get("matched", 0), counts.get("breaks", 0),
                 f" ({detail})" if detail else "")
