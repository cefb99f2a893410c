"""Durable progress of a pipeline run, so a failed or killed run can resume without loss.

After every page whose records are all written (or quarantined), the runner records the
request that comes next. A run that fails or is killed leaves the file behind; ``etrmflow run
--resume`` continues from it, with the same run id, fetching only what is missing. The page in
flight when a run died may be fetched again: sinks upsert, replace per batch id and dedupe dead
letters, so it adds nothing twice.

The file never holds a secret: requests keep ``${secret:NAME}`` markers, and credential-like
query parameters a vendor echoes into a next link are dropped (auth adds them again).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from etrmflow.components import Request
from etrmflow.durable import replace_file
from etrmflow.errors import EtrmflowError
from etrmflow.plan import PipelinePlan
from etrmflow.secrets import SENSITIVE_PARAMS, redact
from etrmflow.sinks.common import LINEAGE_COLUMNS
from etrmflow.steps.tables import quoted

STATE_VERSION = 1


def plan_fingerprint(pipeline: PipelinePlan, project_root: str | Path = ".") -> str:
    """Changes when anything that decides what is fetched or written changes: the pipeline's
    plan, and the content of the reference files and tables its steps and validators read."""
    identity = {"plan": asdict(pipeline), "reference_files": reference_file_hashes(pipeline, project_root)}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def reference_file_hashes(pipeline: PipelinePlan, project_root: str | Path) -> dict[str, str | None]:
    """SHA-256 of each ``file`` option of the pipeline's transforms and contract validators (the
    CSV a join, reconcile or reference-data check reads), and of the content of each SQLite
    ``table`` of a ``database`` option (the same steps' and checks' other source), by option
    path; None if it is missing. A resumed run must look up what the interrupted run looked
    up, or its early and late pages disagree. Of a database, only the table read is hashed:
    the file may be the one the sinks write, and their tables change as the run goes."""
    components = {**{f"transforms[{i}]": c for i, c in enumerate(pipeline.transforms)},
                  **{f"validators[{i}]": c for i, c in enumerate(pipeline.contract.validators)}}
    hashes: dict[str, str | None] = {}
    for where, component in components.items():
        options = component.options
        if isinstance(options.get("file"), str):
            hashes[f"{where}.file"] = _sha256(_in_project(options["file"], project_root))
        if isinstance(options.get("database"), str) and isinstance(options.get("table"), str):
            hashes[f"{where}.database"] = _table_sha256(_in_project(options["database"], project_root),
                                                        options["table"])
    return hashes


def _in_project(raw: str, project_root: str | Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(project_root) / path


def _table_sha256(path: Path, table: str) -> str | None:
    """SHA-256 of the table's (or view's) column names and rows, sorted by every column so that
    the physical order (a VACUUM) does not count; None if the file or the table is missing or
    unreadable (the step or check that reads it says why). etrmflow's lineage columns do not
    count: a table another pipeline loads gets new ones each time it loads the same rows again
    (``etrmflow run --resume`` of a project reruns the pipelines that have nothing to resume)."""
    if not path.is_file():  # opened read-only: a wrong path must not create an empty database
        return None
    digest = hashlib.sha256()
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            found = [row[1] for row in db.execute(f"PRAGMA table_info({quoted(table)})")]
            if not found:
                return None
            columns = [name for name in found if name not in LINEAGE_COLUMNS]
            digest.update(json.dumps(columns).encode())
            listed = ", ".join(quoted(name) for name in columns) or "1"
            order = ", ".join(str(position) for position in range(1, len(columns) + 1)) or "1"
            for row in db.execute(f"SELECT {listed} FROM {quoted(table)} ORDER BY {order}"):
                digest.update(repr(row).encode())  # repr tells 1 from 1.0 from '1', and b'' from ''
    except sqlite3.Error:
        return None
    return digest.hexdigest()


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SENSITIVE_PARAMS and redact(v) == v]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def request_to_dict(request: Request) -> dict[str, Any]:
    return {"method": request.method, "url": _safe_url(request.url), "params": request.params,
            "headers": request.headers, "json": request.json}


def request_from_dict(data: dict[str, Any]) -> Request:
    return Request(method=data["method"], url=data["url"], params=dict(data["params"]),
                   headers=dict(data["headers"]), json=data.get("json"))


class CheckpointError(EtrmflowError):
    """The checkpoint could not be written (a full disk, a read-only folder)."""


class Checkpoint:
    """``target/state/<pipeline>.json``: written atomically after each committed page."""

    def __init__(self, target_dir: str | Path, pipeline: PipelinePlan, project_root: str | Path = ".") -> None:
        self.path = Path(target_dir) / "state" / f"{pipeline.name}.json"
        self._pipeline, self._project_root = pipeline, project_root
        self.resumed: dict[str, Any] | None = None
        """The state this run resumes from (set by ``starting_point``); None for a fresh run."""

    @functools.cached_property
    def fingerprint(self) -> str:
        """Computed once, when first needed: it reads the pipeline's reference files."""
        return plan_fingerprint(self._pipeline, self._project_root)

    def load(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a torn write cannot happen (atomic rename); anything else is not ours
        return state if state.get("state_version") == STATE_VERSION else None

    def save(self, *, run_id: str, next_request: Request | None, pages_done: int, offset: int,
             window: int | None = None, window_label: str | None = None,
             recent_pages: list[tuple[int, str]] | None = None) -> None:
        """``recent_pages``: (page index, body SHA-256) of the walk's latest pages, so a resumed
        run still refuses a page the vendor repeats (see ``etrmflow.engine.resume.RepeatGuard``)."""
        state = {"state_version": STATE_VERSION, "fingerprint": self.fingerprint, "run_id": run_id,
                 "pages_done": pages_done, "offset": offset, "window": window, "window_label": window_label,
                 "next_request": request_to_dict(next_request) if next_request else None,
                 "recent_pages": [list(page) for page in recent_pages or ()]}
        self._write(self.path, state)

    def note_in_flight(self, *, run_id: str, partition: str | None, page: int, batch_id: str) -> None:
        """Before a page's rows are written: the batch id they carry. A resumed run gives the
        page, fetched again, this id (``in_flight``), so its rows replace the interrupted
        attempt's in keyless sinks even when the vendor stamps each answer anew (a
        ``generated_at``): another body hash, otherwise another batch id, and the rows twice."""
        self._write(self.in_flight_path, {"run_id": run_id, "partition": partition, "page": page,
                                          "batch_id": batch_id})

    def in_flight(self) -> tuple[str | None, int, str] | None:
        """(partition, page index, batch id) of the page the resumed run was writing when it
        stopped; None for a fresh run, or when it stopped between pages."""
        if self.resumed is None:
            return None
        try:
            noted = json.loads(self.in_flight_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(noted, dict) or noted.get("run_id") != self.resumed["run_id"]:
            return None
        return noted.get("partition"), noted.get("page"), noted.get("batch_id")

    @property
    def in_flight_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.in_flight.json")

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        try:
            replace_file(path, json.dumps(state, sort_keys=True, default=str))
        except OSError as exc:  # a full disk: a failed run to resume, not a crash that takes the others
            raise CheckpointError(f"cannot write the checkpoint {path}: {exc}; the run stops at the last "
                                  f"page it could record, and once the cause is fixed `etrmflow run --resume` "
                                  f"continues from there (fetching the page after it again)") from exc

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.in_flight_path.unlink(missing_ok=True)
