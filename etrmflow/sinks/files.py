"""File sinks: what Parquet and CSV share (staging, resume, swap at success), and CSV.

Batches go to a staging folder ``<path>.staging-<run_id>``, one part file per batch named by
its batch id (a content hash), so a rewritten batch replaces its own part. ``close(ok=True)``
publishes the result with renames: the whole output is swapped in (CSV, and Parquet in its
default ``replace`` mode; see ``etrmflow.sinks.parquet`` for its other modes).
``close(ok=False)`` leaves the previous output in place and keeps the staging folder, so that
``etrmflow run --resume`` can complete it (a fresh run clears it). So does a publish that fails
(a full disk, a folder where the CSV file goes): the staging folder goes only once it is published.

A run whose outputs were published by some sinks but not all (another sink's publish failed) is
resumed too: while the pipeline has a checkpoint, each sink that published leaves a marker,
``<target>/state/<pipeline>.staging-<run_id>.published/<hash of the output path>``, so that the
resumed run keeps that output as it is instead of publishing an empty one. The engine removes
the marker with the run's other staging files once no checkpoint refers to the run. A resumed
run whose staging folder is gone without a marker refuses to publish what little it would hold.

Beside it, ``<pipeline>.staging-<run_id>.parts/<hash of the output path>`` notes each batch
staged with the checkpoint it was staged after: a resumed run removes the parts of the batches
staged after the last checkpoint, whose page comes again (maybe changed, so under another id).

A page's checkpoint is written once ``write`` returns, so ``write`` leaves everything it wrote
on disk (``etrmflow.durable``): the journal note first, then each part file synced before its
rename, then each folder the batch changed, once. A power cut can then never leave a checkpoint
that counts a page whose rows are gone.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from etrmflow.components import BatchInfo, Sink, SinkContext
from etrmflow.durable import fsync_directories, fsync_directory, make_folder
from etrmflow.errors import SinkError
from etrmflow.sinks.common import (
    NESTED_TYPES,
    column_values,
    decimal_cells,
    decimal_specs,
    decimal_text,
    exact_decimals,
    lineage,
    ordered_columns,
    project_file,
    remove,
    resolve_path,
    staging_path,
    swap_in,
    tidy_leftovers,
    utc_now_iso,
)

log = logging.getLogger("etrmflow.sink")
_FIELD_LIMIT = 2**31 - 1
"""The largest field csv.reader accepts everywhere (a C long on every platform)."""

if TYPE_CHECKING:
    import pandas as pd

    from etrmflow.validation.decimals import DecimalSpec


class StagedSink(Sink):
    """Stages batches in a folder and swaps the finished output in at close."""

    @classmethod
    def written_output(cls, options: Any, project_dir: str) -> tuple[str, bool]:
        """The file or folder, and whether the run replaces it as a whole (``replace``, the
        default): two sinks of one run must not both write it (``etrmflow.config.outputs``)."""
        return project_file(options["path"], project_dir), options.get("mode", "replace") == "replace"

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self.path = resolve_path(context, self.options["path"])
        make_folder(self.path.parent)
        self.staging = staging_path(self.path, context.run_id)
        tidy_leftovers(self.path, keep=self.staging if context.resume else None)
        self._written: set[str] = set()
        self.published = False
        """True on a resume whose run had already published this output: it is kept as it is."""
        if context.resume and self._published_marker().exists() and self.path.exists():
            self._keep_published()
            return
        if context.resume and self.staging.is_dir():
            # Continue the interrupted run's output; a batch it wrote may come again.
            self._written = {part.name.split("-")[1].split(".")[0] for part in self.staging.rglob("part-*")}
            self._forget_uncommitted()
            return
        if context.resume:  # publishing what comes now would lose the rows the folder held
            raise SinkError(f"{self.type_name} sink: cannot resume run {context.run_id}: its staging "
                            f"folder {self.staging}, which holds the rows the run wrote, is gone; run "
                            f"without --resume to write everything again ({self.path} stays as it is "
                            f"until a run succeeds)")
        remove(self.staging)
        make_folder(self.staging)

    def _keep_published(self) -> None:
        """The resumed run had published this output (another sink failed): keep it as it is."""
        log.info("%s was published by run %s before it stopped; the resumed run keeps it as it is",
                 self.path, self.context.run_id)
        remove(self.staging)  # what a failed removal after the publish left
        self.published = True

    def _state_entry(self, kind: str) -> Path:
        # In the engine's state folder, named like the run's staging files there, which the
        # engine keeps while a checkpoint refers to the run and removes after.
        context = self.context
        name = hashlib.sha256(str(self.path).encode()).hexdigest()[:16]
        return Path(context.target_dir) / "state" / f"{context.pipeline}.staging-{context.run_id}.{kind}" / name

    def _published_marker(self) -> Path:
        return self._state_entry("published")

    def _checkpoint_mark(self) -> str:
        """SHA-256 of this run's checkpoint as it is now; "" without one. A part written under
        a mark that is still the checkpoint's belongs to a page the checkpoint does not count."""
        try:
            raw = (Path(self.context.target_dir) / "state" / f"{self.context.pipeline}.json").read_bytes()
            run_id = json.loads(raw).get("run_id")
        except (OSError, ValueError, AttributeError):
            return ""
        return hashlib.sha256(raw).hexdigest() if run_id == self.context.run_id else ""

    def _journal(self, batch_id: str) -> None:
        """Note the mark a batch's part is written under, durably before the part: a part whose
        note a power cut took would survive a resume beside the page's new version."""
        mark = self._checkpoint_mark()
        if mark:  # without a checkpoint of this run there is nothing to resume
            journal = self._state_entry("parts")
            created = not journal.exists()
            make_folder(journal.parent)
            with journal.open("a", encoding="utf-8") as handle:
                handle.write(f"{batch_id} {mark}\n")
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                fsync_directory(journal.parent)

    def _forget_uncommitted(self) -> None:
        """Remove the parts written after the last checkpoint: their page is fetched again, and
        if the vendor now sends it with other content (an amended trade), it comes under another
        batch id, so its old part would stay beside the new one."""
        try:
            lines = self._state_entry("parts").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        latest = dict(line.split(" ", 1) for line in lines if " " in line)  # a rewrite's line comes last
        mark = self._checkpoint_mark()
        changed: set[Path] = set()
        for batch_id, written_under in latest.items():
            if written_under == mark and batch_id in self._written:
                log.info("%s: dropping batch %s, staged after the last checkpoint: its page is fetched again",
                         self.path, batch_id)
                changed |= self._remove_part(batch_id)
                self._written.discard(batch_id)
        fsync_directories(changed)  # a part back after a power cut would sit beside its page's new one

    def _mark_published(self) -> None:
        """Leave the marker while the pipeline has a checkpoint (``state/<pipeline>.json``), so
        while a resume is possible; without one (a replay, a direct use) it would only linger."""
        context = self.context
        if (Path(context.target_dir) / "state" / f"{context.pipeline}.json").exists():
            marker = self._published_marker()
            make_folder(marker.parent)
            marker.touch()
            fsync_directory(marker.parent)  # on disk before the staging folder goes

    def write(self, frame: pd.DataFrame, batch: BatchInfo) -> int:
        if self.published:  # the published output holds the rows of every batch of this run
            return len(frame)
        try:
            changed: set[Path] = set()
            if batch.batch_id in self._written:
                changed = self._remove_part(batch.batch_id)  # a rewrite must leave no old part behind
            self._journal(batch.batch_id)
            changed |= self._write_part(frame, batch)
            # The page's checkpoint follows: its parts (each synced as written) must be on disk
            # under their names first. One sync per folder the batch changed.
            fsync_directories(changed)
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
        except Exception as exc:
            # The staged rows stay: a resumed run publishes them without fetching them again.
            raise SinkError(f"{self.type_name} sink: publishing {self.path} failed: {exc}; the rows stay "
                            f"staged in {staging}: once the cause is fixed, `etrmflow run --resume` "
                            f"publishes them (after a change to the pipeline or its contract, run "
                            f"without --resume)") from exc
        self._mark_published()  # before the staging goes: see _keep_published
        remove(staging)

    def _publish(self) -> None:
        swap_in(self.staging, self.path, self.context.run_id)

    def _write_part(self, frame: pd.DataFrame, batch: BatchInfo) -> set[Path]:
        """Write the batch's part file(s) and sync them; return the folders whose entries
        changed (``write`` syncs them)."""
        raise NotImplementedError

    def _remove_part(self, batch_id: str) -> set[Path]:
        """Remove the batch's part file(s); return the folders they were in."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------

def _csv_cells(series: pd.Series, declared: str | None, spec: DecimalSpec | None = None) -> list[Any]:
    if spec is not None:  # the exact digits, at the declared scale
        return [decimal_text(v) for v in decimal_cells(series, spec)]
    exact = exact_decimals(series) if declared is None else None
    if exact is not None:  # money a step computed, undeclared: the digits as the Decimals have them
        return [decimal_text(v) for v in exact]
    values = column_values(series, as_json=declared in NESTED_TYPES)
    if declared == "integer":  # pandas holds an integer column with a gap as float: 5.0 -> 5
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    return values


def _folder_there(path: Path) -> str:
    return f"{path} is a folder, and the csv sink writes a file there: remove or rename the folder, or set another path"


class CsvSink(StagedSink):
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
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "Output file, relative to the project folder; replaced "
                                    "when a run succeeds."},
            "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ",",
                          "description": "Field separator."},
            # One file has no partitions to replace, and appending to it could not be undone
            # when a run fails: the key exists so that asking for another mode gets this answer.
            "mode": {"enum": ["replace"], "default": "replace",
                     "description": "Only replace: the file becomes this run's rows. For append "
                                    "or replace_partition use a parquet or database sink."},
        },
    }

    def open(self, context: SinkContext) -> None:
        target = resolve_path(context, self.options["path"])
        if target.is_dir():  # said now, not once the whole run is fetched (publishing checks again)
            raise SinkError(f"csv sink: {_folder_there(target)}")
        super().open(context)
        # Batch ids in first-write order; a resumed run starts with the parts already staged.
        staged = sorted(self.staging.glob("part-*.csv"), key=lambda part: part.stat().st_mtime_ns)
        self._order: dict[str, None] = dict.fromkeys(part.name[5:-4] for part in staged)

    def describe(self) -> str:
        return f"csv {self.options['path']}"

    def _write_part(self, frame: pd.DataFrame, batch: BatchInfo) -> set[Path]:
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
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, part)
        self._order.setdefault(batch.batch_id)
        return {self.staging}

    def _remove_part(self, batch_id: str) -> set[Path]:
        part = self._part(batch_id)
        remove(part)
        remove(part.with_name(part.name + ".tmp"))
        return {self.staging}

    def _part(self, batch_id: str) -> Path:
        return self.staging / f"part-{batch_id}.csv"

    def _delimiter(self) -> str:
        return self.options.get("delimiter", ",")

    def _publish(self) -> None:
        if self.path.is_dir():  # swapping the file in would delete the folder and all it holds
            raise SinkError(_folder_there(self.path))
        # Parts are read back with csv.reader, whose default limit (128 KiB a field) would fail
        # the run on a long value that the writer took without complaint.
        csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
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
