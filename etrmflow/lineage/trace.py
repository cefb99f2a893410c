"""Finding a key's rows, dead letters and vendor requests. Reads files; writes nothing."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from etrmflow.audit.chain import AUDIT_LOG
from etrmflow.audit.verify import parse
from etrmflow.dlq import open_store
from etrmflow.errors import ConfigError
from etrmflow.lineage.key import matches
from etrmflow.lineage.model import Fetch, Lineage, Quarantined, Written
from etrmflow.plan import ComponentPlan, PipelinePlan, Plan

Fetches = Mapping[str, tuple[Fetch, ...]]
"""Page hash (``body_sha256``) -> every ``page_fetched`` entry of that page, oldest first."""
_LINEAGE = ("_etrmflow_run_id", "_etrmflow_batch_id", "_etrmflow_page_sha256", "_etrmflow_loaded_at")
_DEFAULT_DATABASE = "target/etrmflow.db"


def trace(plan: Plan, pipeline: PipelinePlan, key: Mapping[str, str]) -> Lineage:
    """Every stored version and dead letter of ``key``, each joined to the requests of its page."""
    notes: list[str] = []
    fetches = audit_fetches(Path(plan.target_dir) / AUDIT_LOG, pipeline.name, notes)
    written: list[Written] = []
    for sink in pipeline.sinks:
        if sink.type == "sqlite":
            written.extend(_sqlite_rows(plan, pipeline, sink, key, fetches, notes))
    return Lineage(pipeline=pipeline.name, key=dict(key), written=tuple(written),
                   quarantined=tuple(_letters(plan, pipeline, key, fetches, notes)), notes=tuple(notes))


def audit_fetches(path: Path, pipeline: str, notes: list[str]) -> Fetches:
    """The ``page_fetched`` entries of ``pipeline`` by page hash (the chain is not checked here)."""
    try:
        rows, _ = parse(path.read_bytes())
    except OSError as exc:
        notes.append(f"audit log {path} not readable ({exc.strerror or exc}): requests unknown")
        return {}
    found: dict[str, list[Fetch]] = defaultdict(list)
    for row in rows:
        entry = row.entry
        if entry["event"] == "page_fetched" and entry["pipeline"] == pipeline and entry.get("body_sha256"):
            found[str(entry["body_sha256"])].append(_fetch(entry))
    return {page: tuple(entries) for page, entries in found.items()}


def _fetch(entry: Mapping[str, Any]) -> Fetch:
    return Fetch(seq=int(entry["seq"]), run_id=str(entry["run_id"]), method=str(entry.get("method")),
                 url=str(entry.get("url")), status=entry.get("status"), fetched_at=entry.get("fetched_at"),
                 page=entry.get("page"))


def _of_page(fetches: Fetches, page_sha256: Any, run_id: Any) -> tuple[Fetch, ...]:
    """The fetches of a page, those of ``run_id`` first: an identical page may come in many runs."""
    entries = fetches.get(str(page_sha256), ())
    return tuple(sorted(entries, key=lambda f: (f.run_id != run_id, f.seq)))


def _letters(plan: Plan, pipeline: PipelinePlan, key: Mapping[str, str], fetches: Fetches,
             notes: list[str]) -> list[Quarantined]:
    try:
        store = open_store(plan, pipeline, run_id="lineage")
        letters = store.letters()
    except (ConfigError, OSError) as exc:
        notes.append(f"dead letters not readable: {exc}")
        return []
    return [Quarantined(letter=letter.data, status=str(letter.status),
                        fetches=_of_page(fetches, letter.data.get("page_sha256"), letter.data.get("run_id")))
            for letter in letters if matches(letter.record, key)]


def _sqlite_rows(plan: Plan, pipeline: PipelinePlan, sink: ComponentPlan, key: Mapping[str, str],
                 fetches: Fetches, notes: list[str]) -> list[Written]:
    raw = Path(sink.options.get("path") or _DEFAULT_DATABASE).expanduser()
    path = raw if raw.is_absolute() else Path(plan.project_root) / raw
    table, mode = str(sink.options["table"]), str(sink.options.get("mode", "upsert"))
    where = f"sqlite {raw} table {table}"
    if not path.exists():
        notes.append(f"{where}: no database yet")
        return []
    rows = _select(path, table, key, where, notes)
    if mode != "append":
        columns = ", ".join(sink.options.get("key") or pipeline.contract.primary_key)
        notes.append(f"{where} is written in mode {mode} on ({columns}): it keeps only the latest load of "
                     f"each row; earlier loads of the same key appear only as fetches of the audit log "
                     f"(by page hash) and as dead letters")
    return [_written(where, row, fetches) for row in rows]


def _written(where: str, row: Mapping[str, Any], fetches: Fetches) -> Written:
    run_id, batch_id, page, loaded_at = (row.get(c) for c in _LINEAGE)
    values = {k: v for k, v in row.items() if k not in _LINEAGE}
    return Written(sink=where, values=values, run_id=run_id, batch_id=batch_id, page_sha256=page,
                   loaded_at=loaded_at, fetches=_of_page(fetches, page, run_id))


def _select(path: Path, table: str, key: Mapping[str, str], where: str, notes: list[str]) -> list[dict[str, Any]]:
    # Read-only: tracing must never create or change a database. Values compare as text, so the
    # key typed on the command line matches INTEGER and TEXT columns alike.
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        columns = [r[1] for r in db.execute(f"PRAGMA table_info({_q(table)})")]
        missing = [name for name in key if name not in columns]
        if not columns or missing:
            notes.append(f"{where}: " + ("no such table" if not columns else f"no column {', '.join(missing)}"))
            return []
        test = " AND ".join(f"{_text(name)} = ?" for name in key) or "1"
        order = " ORDER BY _etrmflow_loaded_at" if "_etrmflow_loaded_at" in columns else ""
        cursor = db.execute(f"SELECT * FROM {_q(table)} WHERE {test}{order}", tuple(key.values()))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor.fetchall()]
    except sqlite3.Error as exc:
        notes.append(f"{where}: not readable ({exc})")
        return []
    finally:
        db.close()


def _text(column: str) -> str:
    # A REAL 2.0 reads back as '2.0' in CAST; the command line says 2.
    name = _q(column)
    return (f"CASE WHEN typeof({name}) = 'real' AND {name} = CAST({name} AS INTEGER) "
            f"THEN CAST(CAST({name} AS INTEGER) AS TEXT) ELSE CAST({name} AS TEXT) END")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
