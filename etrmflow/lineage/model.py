"""What ``etrmflow lineage`` found: frozen values and their JSON form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch:
    """One ``page_fetched`` entry of the audit log: the vendor request a page came from."""

    seq: int
    run_id: str
    method: str
    url: str
    """As logged: credentials masked."""
    status: int | None
    fetched_at: str | None
    page: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "run_id": self.run_id, "method": self.method, "url": self.url,
                "status": self.status, "fetched_at": self.fetched_at, "page": self.page}


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """A row of a SQLite sink with the key: its values, its lineage columns and its page's fetches."""

    sink: str
    values: Mapping[str, Any]
    run_id: str | None
    batch_id: str | None
    page_sha256: str | None
    loaded_at: str | None
    fetches: tuple[Fetch, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"sink": self.sink, "values": dict(self.values), "run_id": self.run_id, "batch_id": self.batch_id,
                "page_sha256": self.page_sha256, "loaded_at": self.loaded_at,
                "fetches": [f.as_dict() for f in self.fetches]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Quarantined:
    """A dead letter of the key, with its status and its page's fetches."""

    letter: Mapping[str, Any]
    """As stored (the shape of ``DeadLetter.as_dict``)."""
    status: str
    fetches: tuple[Fetch, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, **self.letter, "fetches": [f.as_dict() for f in self.fetches]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Lineage:
    """Everything known about one key of one pipeline."""

    pipeline: str
    key: Mapping[str, str]
    written: tuple[Written, ...]
    quarantined: tuple[Quarantined, ...]
    notes: tuple[str, ...]
    """What could not be read, and what the stores cannot show (e.g. versions an upsert replaced)."""

    @property
    def found(self) -> bool:
        return bool(self.written or self.quarantined)

    def as_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "key": dict(self.key), "found": self.found,
                "written": [w.as_dict() for w in self.written],
                "quarantined": [q.as_dict() for q in self.quarantined], "notes": list(self.notes)}
