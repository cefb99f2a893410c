"""Where whole-dataset steps keep their input: an embedded SQLite database per run.

``target/state/<pipeline>.staging-<run_id>.db`` holds, per stage (the input of one
whole-dataset step), the rows of every batch with their group key. A page's rows are staged in
the page's commit, in one transaction that first deletes what an earlier attempt staged under
the same batch id, so a page processed twice is staged once. Each staged batch also records
the checkpoint as it was when the batch was staged: when a killed run is resumed, the batch
staged after the last checkpoint (its page is fetched again) is dropped, even if the vendor
sends that page with other content and so another batch id.

The file lives as long as a checkpoint refers to its run: ``tidy`` removes every other staging
file of the pipeline (a finished run's, or one a later fresh run made obsolete).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from etrmflow.engine.staging_codec import (
    StagingError,
    column_codec,
    dtype_spec,
    dumps_tagged,
    encode_column,
    key_rows,
    loads_tagged,
)
from etrmflow.sinks.common import transaction

FORMAT = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS slots (stage INTEGER NOT NULL, name TEXT NOT NULL, slot INTEGER NOT NULL,
                                  PRIMARY KEY (stage, name));
CREATE TABLE IF NOT EXISTS batches (stage INTEGER NOT NULL, batch_id TEXT NOT NULL, arrival INTEGER NOT NULL,
                                    schema_id INTEGER NOT NULL, rows INTEGER NOT NULL, mark TEXT NOT NULL,
                                    PRIMARY KEY (stage, batch_id));
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class StagingPlace:
    """Where a run stages, and whether it continues an earlier run's staging (``resume``)."""

    folder: Path
    pipeline: str
    run_id: str
    resume: bool = False
    checkpoint: Path | None = None
    """The pipeline's checkpoint file: which run's staging to keep, and what was committed."""

    @property
    def path(self) -> Path:
        return self.folder / f"{self.pipeline}.staging-{self.run_id}.db"

    @property
    def scratch(self) -> Path:
        """A folder for steps' own files (e.g. a reference dataset they stage)."""
        return self.folder / f"{self.pipeline}.staging-{self.run_id}.d"

    def checkpoint_state(self) -> tuple[str, str | None]:
        """(digest of the checkpoint file, its run id); ``("", None)`` without one."""
        try:
            raw = self.checkpoint.read_bytes() if self.checkpoint else b""
        except FileNotFoundError:
            raw = b""
        if not raw:
            return "", None
        try:
            run_id = json.loads(raw).get("run_id")
        except ValueError:
            run_id = None
        return hashlib.sha256(raw).hexdigest(), run_id

    def mark(self) -> str:
        """What a batch staged now records: the checkpoint of this run, as it is before the commit."""
        digest, run_id = self.checkpoint_state()
        return digest if run_id == self.run_id else ""

    def tidy(self) -> None:
        """Remove the pipeline's staging files but those of the run the checkpoint refers to."""
        _, keep = self.checkpoint_state()
        prefix = f"{self.pipeline}.staging-"
        for path in sorted(self.folder.glob(prefix + "*")):
            if path.name[len(prefix):].split(".")[0] != keep:
                _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _connect(path: Path) -> sqlite3.Connection:
    # synchronous FULL (the default): a staged page must survive a crash once its checkpoint says so
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA temp_store=FILE")  # sorts that outgrow the cache spill to disk, not to memory
    return db


def rows_table(stage: int) -> str:
    return f"rows_{int(stage)}"


def key_columns(width: int) -> list[str]:
    return [f"k{i}{part}" for i in range(width) for part in ("", "x")]


class StagingStore:
    """The staging database of one run: stage rows, read them back by key (``staging_read``)."""

    def __init__(self, place: StagingPlace) -> None:
        self.place = place
        self.path = place.path
        try:
            self.db = self._open()
        except sqlite3.Error as exc:
            raise StagingError(f"cannot open the staging database {self.path}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        place = self.place
        if place.resume and not self.path.exists():
            raise StagingError(f"the rows run {place.run_id} staged for its whole-dataset steps are gone "
                               f"({self.path} is missing), so it cannot be resumed; run without --resume "
                               f"to start over")
        if not place.resume:
            for leftover in self.path.parent.glob(self.path.name + "*"):
                _remove(leftover)  # a fresh run starts with nothing staged
            _remove(place.scratch)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path)
        db.executescript(_SCHEMA)
        found = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if found and (found.get("format"), found.get("run_id")) != (FORMAT, place.run_id):
            db.close()
            raise StagingError(f"{self.path} was not staged by run {place.run_id} (format "
                               f"{found.get('format')}); run without --resume to start over")
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("format", FORMAT), ("run_id", place.run_id)])
        if place.resume:
            self._forget_uncommitted(db, place.mark())
        return db

    def _forget_uncommitted(self, db: sqlite3.Connection, mark: str) -> None:
        """Drop the batch staged after the last checkpoint: its page is fetched again."""
        stale = db.execute("SELECT stage, arrival FROM batches WHERE stage = 0 AND mark = ?", (mark,)).fetchall()
        with transaction(db):
            for stage, arrival in stale:
                db.execute(f"DELETE FROM {rows_table(stage)} WHERE arrival = ?", (arrival,))
            db.execute("DELETE FROM batches WHERE stage = 0 AND mark = ?", (mark,))

    # -- writing ---------------------------------------------------------------------------

    def stage(self, stage: int, batch_id: str, frame: pd.DataFrame, key: list[str]) -> None:
        """Stage ``frame`` as batch ``batch_id``, replacing what that batch staged before."""
        if frame.columns.has_duplicates:
            repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
            raise StagingError(f"the frame has two columns named {', '.join(repeated)}; rename one before "
                               f"the whole-dataset step")
        keys = key_rows(frame, key)
        names = [dumps_tagged(name) for name in frame.columns]
        codecs = [column_codec(frame.iloc[:, i]) for i in range(frame.shape[1])]
        cells = [encode_column(frame.iloc[:, i], codec) for i, codec in enumerate(codecs)]
        specs = [dtype_spec(dtype) for dtype in frame.dtypes]
        mark = self.place.mark() if stage == 0 else ""
        try:
            with transaction(self.db):
                self._ensure_table(stage, len(key))
                slots = self._slots(stage, names)
                schema = [{"name": n, "slot": s, "codec": c, "dtype": d}
                          for n, s, c, d in zip(names, slots, codecs, specs)]
                arrival = self._replace_batch(stage, batch_id, schema, len(frame), mark)
                self._insert(stage, arrival, len(key), slots, keys, cells)
        except sqlite3.Error as exc:
            raise StagingError(f"staging batch {batch_id} in {self.path} failed and was rolled back: "
                               f"{exc}") from exc

    def _ensure_table(self, stage: int, width: int) -> None:
        columns = ", ".join(["arrival INTEGER NOT NULL", "seq INTEGER NOT NULL", *key_columns(width)])
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {rows_table(stage)} ({columns})")
        self.db.execute(f"CREATE INDEX IF NOT EXISTS {rows_table(stage)}_arrival ON {rows_table(stage)} (arrival)")

    def _slots(self, stage: int, names: list[str]) -> list[int]:
        known = dict(self.db.execute("SELECT name, slot FROM slots WHERE stage = ?", (stage,)).fetchall())
        for name in names:
            if name not in known:
                known[name] = len(known)
                self.db.execute("INSERT INTO slots VALUES (?, ?, ?)", (stage, name, known[name]))
                # no declared type: each cell keeps the storage class it was written with
                self.db.execute(f"ALTER TABLE {rows_table(stage)} ADD COLUMN c{known[name]}")
        return [known[name] for name in names]

    def _replace_batch(self, stage: int, batch_id: str, schema: list[dict[str, Any]], rows: int, mark: str) -> int:
        found = self.db.execute("SELECT arrival FROM batches WHERE stage = ? AND batch_id = ?",
                                (stage, batch_id)).fetchone()
        if found:
            arrival = found[0]
            self.db.execute(f"DELETE FROM {rows_table(stage)} WHERE arrival = ?", (arrival,))
        else:
            arrival = self.db.execute("SELECT coalesce(max(arrival), 0) + 1 FROM batches WHERE stage = ?",
                                      (stage,)).fetchone()[0]
        text = orjson.dumps(schema).decode()
        self.db.execute("INSERT OR IGNORE INTO schemas (text) VALUES (?)", (text,))
        schema_id = self.db.execute("SELECT id FROM schemas WHERE text = ?", (text,)).fetchone()[0]
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                        (stage, batch_id, arrival, schema_id, rows, mark))
        return int(arrival)

    def _insert(self, stage: int, arrival: int, width: int, slots: list[int], keys: list[tuple[Any, ...]],
                cells: list[list[Any]]) -> None:
        if not keys:
            return
        names = ["arrival", "seq", *key_columns(width), *(f"c{slot}" for slot in slots)]
        sql = f"INSERT INTO {rows_table(stage)} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        rows = ((arrival, seq, *key, *values) for seq, (key, *values) in enumerate(zip(keys, *cells)))
        self.db.executemany(sql, rows)

    def drop_stages_from(self, stage: int) -> None:
        """Forget stages ``stage`` and later: the finish rebuilds them from the pages' stage."""
        tables = [name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                      "AND name LIKE 'rows_%'")]
        with transaction(self.db):
            for name in tables:
                if int(name.removeprefix("rows_")) >= stage:
                    self.db.execute(f"DROP TABLE {name}")
            self.db.execute("DELETE FROM batches WHERE stage >= ?", (stage,))
            self.db.execute("DELETE FROM slots WHERE stage >= ?", (stage,))

    def columns(self, stage: int) -> list[Any]:
        """Every column staged so far for ``stage``, in the order they were first seen."""
        return [loads_tagged(name) for (name,) in self.db.execute(
            "SELECT name FROM slots WHERE stage = ? ORDER BY slot", (stage,))]

    def rows(self, stage: int) -> int:
        return int(self.db.execute("SELECT coalesce(sum(rows), 0) FROM batches WHERE stage = ?",
                                   (stage,)).fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
