"""A replay in flight: the run id and batches of a replay whose letters are not yet resolved.

A replay writes its batches to the sinks, closes them, and only then resolves the letters. A
replay that stops in between (killed, or the resolution failed) leaves rows written and their
letters open. An ``upsert`` sink rewrites the same rows next time; a sink without a key
(``append``) would add them a second time. So before it writes, a replay records its run id and
batches in ``<target>/state/<pipeline>.dlq_replay.json``. The next replay continues that run:
the same run id, each recorded batch rebuilt with the same id, and the sinks opened as for
``run --resume``, so a keyless sink replaces that batch's rows instead of adding them again.
A batch leaves the file once all its records are resolved, the file once no batch is left.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etrmflow.durable import fsync_directory, replace_file
from etrmflow.errors import StorageError, write_failure

PENDING_VERSION = 1
AGAIN = "then run `etrmflow dlq replay` again"


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingBatch:
    """A batch a replay wrote (or was about to write): its id, vendor page and record hashes."""

    batch_id: str
    page_sha256: str
    records: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "page_sha256": self.page_sha256, "records": list(self.records)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """The replay that wrote ``batches`` under ``run_id`` and has not resolved all their letters."""

    run_id: str
    batches: tuple[PendingBatch, ...]

    def batch_of(self) -> dict[str, PendingBatch]:
        """Record hash -> the recorded batch that holds it."""
        return {digest: batch for batch in self.batches for digest in batch.records}

    def merged(self, batches: list[PendingBatch]) -> Pending:
        """These batches recorded too (a batch already recorded keeps its first record list)."""
        known = {batch.batch_id for batch in self.batches}
        return Pending(run_id=self.run_id, batches=self.batches + tuple(b for b in batches if b.batch_id not in known))

    def without(self, resolved: set[str]) -> Pending:
        """The batches still holding a record that is not resolved."""
        return Pending(run_id=self.run_id,
                       batches=tuple(b for b in self.batches if not set(b.records) <= resolved))


def pending_path(target_dir: str | Path, pipeline: str) -> Path:
    return Path(target_dir) / "state" / f"{pipeline}.dlq_replay.json"


def read_pending(path: Path) -> Pending | None:
    """The recorded replay in flight; None if there is none. A file that cannot be read is a
    StorageError: continuing without it could load its records twice."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("pending_version") != PENDING_VERSION:
            raise ValueError(f"unknown pending_version {data.get('pending_version')!r}")
        batches = tuple(PendingBatch(batch_id=str(b["batch_id"]), page_sha256=str(b["page_sha256"]),
                                     records=tuple(str(r) for r in b["records"])) for b in data["batches"])
        return Pending(run_id=str(data["run_id"]), batches=batches)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(f"cannot read {path}, the record of an earlier replay that wrote rows but did not "
                           f"resolve their letters ({exc}); without it a replay could load those records "
                           f"twice. Check the sinks for rows of that replay, then delete the file") from exc


def write_pending(path: Path, pending: Pending) -> None:
    """Write the record durably (atomically), or delete it when no batch is left."""
    if not pending.batches:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_directory(path.parent)
        return
    data = {"pending_version": PENDING_VERSION, "run_id": pending.run_id,
            "batches": [batch.as_dict() for batch in pending.batches]}
    try:
        replace_file(path, json.dumps(data, sort_keys=True))
    except OSError as exc:
        raise StorageError(f"cannot record the replay's batches in {path} before writing them, so nothing "
                           f"was written: {write_failure(exc, AGAIN)}") from exc
