"""The store of the ``sqlite`` dead-letter sink: read a pipeline's rows, set their status.

A letter's row stays; resolving it sets ``status``, ``resolved_at`` and ``resolved_by_run``
(the sink's unique index covers open letters only, so the same record quarantined again later
is a new row). Reading opens the database read-only and creates nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.request import pathname2url

from etrmflow import jsontext
from etrmflow.builtins.dead_letters_sqlite import DEFAULT_PATH, DEFAULT_TABLE
from etrmflow.components import SinkContext
from etrmflow.dlq.model import LetterStatus, Resolution, StoredLetter
from etrmflow.errors import SinkError
from etrmflow.plan import ComponentPlan
from etrmflow.sinks.common import resolve_path


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _letter(row: sqlite3.Row) -> StoredLetter:
    data = {
        "record": jsontext.loads(row["record"], lone_surrogates=True),  # as the jsonl store reads it
        "violations": jsontext.loads(row["violations"], lone_surrogates=True),
        "contract": {"name": row["contract"], "version": row["contract_version"]},
        "source": {"connector": row["connector"], "stream": row["stream"], "page": row["page"],
                   "request_url": row["request_url"]},
        "run_id": row["run_id"], "batch_id": row["batch_id"], "page_sha256": row["page_sha256"],
        "record_sha256": row["record_sha256"], "quarantined_at": row["quarantined_at"],
    }
    letter = StoredLetter(data=data, key=row["dedupe_key"])
    if row["status"] == str(LetterStatus.RESOLVED):
        return letter.resolved({"resolved_at": row["resolved_at"], "resolved_by_run": row["resolved_by_run"]})
    return letter


class SqliteDeadLetterStore:
    """The dead letters of one pipeline in a ``sqlite`` dead-letter table (pipelines may share it)."""

    def __init__(self, path: Path, table: str, pipeline: str, display: str) -> None:
        self.path, self.table, self.pipeline, self.display = path, table, pipeline, display

    @classmethod
    def from_plan(cls, component: ComponentPlan, context: SinkContext) -> SqliteDeadLetterStore:
        raw = component.options.get("path", DEFAULT_PATH)
        return cls(resolve_path(context, raw), component.options.get("table", DEFAULT_TABLE),
                   context.pipeline, f"{raw} table {component.options.get('table', DEFAULT_TABLE)}")

    def describe(self) -> str:
        return f"sqlite {self.display}"

    def letters(self) -> list[StoredLetter]:
        if not self.path.exists():
            return []
        with self._connect(read_only=True) as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                              (self.table,)).fetchone():
                return []
            rows = db.execute(f"SELECT * FROM {_q(self.table)} WHERE pipeline = ? ORDER BY id", (self.pipeline,))
            return [_letter(row) for row in rows]

    def resolve(self, resolutions: Sequence[Resolution]) -> int:
        update = (f"UPDATE {_q(self.table)} SET status = 'resolved', resolved_at = ?, resolved_by_run = ? "
                  f"WHERE pipeline = ? AND dedupe_key = ? AND status = 'open'")
        values = [(r.resolved_at, r.resolved_by_run, self.pipeline, r.dedupe_key) for r in resolutions]
        try:
            with self._connect(read_only=False) as db:
                db.execute("BEGIN IMMEDIATE")
                before = db.total_changes
                db.executemany(update, values)
                changed = db.total_changes - before
                db.execute("COMMIT")
                return changed
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite dead-letter store: resolving letters in table {self.table} of "
                            f"{self.path} failed and was rolled back: {exc}") from exc

    @contextlib.contextmanager
    def _connect(self, *, read_only: bool) -> Iterator[sqlite3.Connection]:
        uri = f"file:{pathname2url(str(self.path))}{'?mode=ro' if read_only else ''}"
        db = sqlite3.connect(uri, uri=True, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=5000")
        try:
            yield db
        finally:
            db.close()  # an uncommitted transaction is rolled back

