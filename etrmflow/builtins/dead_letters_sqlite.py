"""The SQLite dead-letter sink: quarantined records as rows of a table, each with a status.

Registered by the hook in ``etrmflow.builtins.dead_letters``, next to the ``jsonl`` sink whose
dedupe key it shares.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import orjson

# The jsonl sink's own key and JSON fallback: both sinks must call the same letters "the same".
from etrmflow import jsontext
from etrmflow.builtins.dead_letters import _letter_key, _to_json
from etrmflow.components import DeadLetter, DeadLetterSink, SinkContext
from etrmflow.errors import SinkError, write_failure
from etrmflow.sinks.common import (
    project_file,
    resolve_path,
    transaction,
    wal_connection,
)

DEFAULT_PATH = "target/etrmflow.db"
DEFAULT_TABLE = "dead_letters"
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY

COLUMNS: dict[str, str] = {
    "id": "INTEGER PRIMARY KEY",
    "dedupe_key": "TEXT NOT NULL",
    "pipeline": "TEXT NOT NULL",
    "contract": "TEXT NOT NULL",
    "contract_version": "TEXT NOT NULL",
    "record_sha256": "TEXT NOT NULL",
    "record": "TEXT NOT NULL",
    "violations": "TEXT NOT NULL",
    "connector": "TEXT NOT NULL",
    "stream": "TEXT NOT NULL",
    "page": "INTEGER NOT NULL",
    "request_url": "TEXT NOT NULL",
    "run_id": "TEXT NOT NULL",
    "batch_id": "TEXT NOT NULL",
    "page_sha256": "TEXT NOT NULL",
    "quarantined_at": "TEXT NOT NULL",
    "status": "TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved'))",
    "resolved_at": "TEXT",
    "resolved_by_run": "TEXT",
}
"""The table's columns: every DeadLetter field (record and violations as JSON text), the
pipeline, the dedupe key (hex), and the letter's status."""
_INSERTED = [name for name in COLUMNS if name not in ("id", "status", "resolved_at", "resolved_by_run")]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _dumps(value: Any) -> str:
    return jsontext.dumps(value, default=_to_json, option=_JSON_OPTIONS).decode()


def letter_row(letter: DeadLetter, pipeline: str) -> tuple[Any, ...]:
    """The values of ``_INSERTED`` for one letter."""
    return (_letter_key(letter).hex(), pipeline, letter.contract, letter.contract_version,
            letter.record_sha256, _dumps(letter.record), _dumps([v.as_dict() for v in letter.violations]),
            letter.connector, letter.stream, letter.page, letter.request_url, letter.run_id,
            letter.batch_id, letter.page_sha256, letter.quarantined_at)


class SqliteDeadLetterSink(DeadLetterSink):
    """Keep quarantined records as rows of an SQLite table, once each, with a status.

    One row per letter: every field of a dead letter (the record and its violations as JSON
    text with sorted keys), the pipeline, the ``dedupe_key`` (the ``jsonl`` sink's key: record
    hash, contract name and version, violation keywords and pointers) and ``status`` (``open``
    or ``resolved``, with ``resolved_at`` and ``resolved_by_run``). A unique index on the key of
    the open letters means a letter stored twice adds nothing, across runs too; once resolved,
    the same record quarantined again is a new open letter. Each write is one transaction.

    Example::

        dead_letter:
          type: sqlite
          path: target/etrmflow.db
          table: dead_letters
    """

    type_name = "sqlite"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string", "minLength": 1, "default": DEFAULT_PATH,
                     "description": "Database file, relative to the project folder."},
            "table": {"type": "string", "pattern": IDENTIFIER, "default": DEFAULT_TABLE,
                      "description": "Table of dead letters (created if needed); pipelines may share it."},
        },
    }

    @classmethod
    def written_output(cls, options: Any, project_dir: str) -> tuple[str, bool]:
        """Its table, as the sqlite sink names one (``etrmflow.config.outputs``): letters are
        added to it, never replaced, but a sink replacing a table of that name would drop them."""
        path = project_file(options.get("path", DEFAULT_PATH), project_dir)
        return f"{path}#{options.get('table', DEFAULT_TABLE).lower()}", False

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.table: str = options.get("table", DEFAULT_TABLE)
        self._db: sqlite3.Connection | None = None
        names = ", ".join(map(_q, _INSERTED))
        self._insert = (f"INSERT INTO {_q(self.table)} ({names}) VALUES ({', '.join('?' * len(_INSERTED))}) "
                        f"ON CONFLICT (dedupe_key) WHERE status = 'open' DO NOTHING")

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self.path: Path = resolve_path(context, self.options.get("path", DEFAULT_PATH))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = wal_connection(str(self.path))
            with transaction(self._db):
                self._create()
        except (sqlite3.Error, OSError) as exc:
            self.close(False)
            raise SinkError(f"sqlite dead-letter sink: cannot open table {self.table} in {self.path}: "
                            f"{write_failure(exc)}") from exc
        except BaseException:
            self.close(False)
            raise

    def write(self, letters: list[DeadLetter]) -> int:
        if self._db is None:
            raise SinkError("sqlite dead-letter sink: write before open")
        try:
            rows = [letter_row(letter, self.context.pipeline) for letter in letters]
            with transaction(self._db):
                before = self._db.total_changes
                self._db.executemany(self._insert, rows)
                return self._db.total_changes - before
        except (sqlite3.Error, TypeError) as exc:  # before the page's valid records: the page fails whole
            raise SinkError(f"sqlite dead-letter sink: storing {len(letters)} letter(s) in table {self.table} "
                            f"of {self.path} failed and was rolled back: {write_failure(exc)}") from exc

    def close(self, ok: bool) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def describe(self) -> str:
        return f"sqlite {self.options.get('path', DEFAULT_PATH)} table {self.table}"


    def _create(self) -> None:
        assert self._db is not None
        table = _q(self.table)
        columns = ", ".join(f"{_q(name)} {kind}" for name, kind in COLUMNS.items())
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        found = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        missing = [name for name in COLUMNS if name not in found]
        if missing:
            raise SinkError(f"sqlite dead-letter sink: table {self.table} in {self.path} is not a dead-letter "
                            f"table (no column {', '.join(missing)}); choose another table")
        self._db.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {_q(self.table + '__open_letter')} "
                         f"ON {table} (dedupe_key) WHERE status = 'open'")
