"""What a dead-letter store holds and how it is read: letters with a status, and resolutions.

A leaf of the ``dlq`` package: no I/O here. Each dead-letter type (``jsonl``, ``sqlite``...) has
a store that implements :class:`DeadLetterStore` for its own medium.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SHORT_HASH = 12
"""Characters of the record hash that ``etrmflow dlq list`` shows."""


class LetterStatus(str, enum.Enum):
    """Where a dead letter stands: still waiting, or loaded by a replay."""

    OPEN = "open"
    RESOLVED = "resolved"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredLetter:
    """One dead letter as its store keeps it, with its status.

    ``data`` has the shape of :meth:`etrmflow.components.DeadLetter.as_dict` (``record``,
    ``violations``, ``contract``, ``source``, ``run_id``, ``batch_id``, ``page_sha256``,
    ``record_sha256``, ``quarantined_at``); ``key`` identifies the letter in its store (for
    ``jsonl``, the hex dedupe key); ``resolution`` holds the resolution once there is one.
    """

    data: Mapping[str, Any]
    key: str
    status: LetterStatus = LetterStatus.OPEN
    resolution: Mapping[str, Any] | None = None

    @property
    def record(self) -> Any:
        return self.data["record"]

    @property
    def record_sha256(self) -> str:
        return str(self.data["record_sha256"])

    @property
    def short_hash(self) -> str:
        return self.record_sha256[:SHORT_HASH]

    @property
    def contract_version(self) -> str:
        return str(self.data["contract"]["version"])

    @property
    def violations(self) -> list[Mapping[str, Any]]:
        return list(self.data.get("violations") or ())

    @property
    def quarantined_at(self) -> str:
        return str(self.data.get("quarantined_at", ""))

    @property
    def page_sha256(self) -> str:
        return str(self.data.get("page_sha256", ""))

    def resolved(self, resolution: Mapping[str, Any]) -> StoredLetter:
        return dataclasses.replace(self, status=LetterStatus.RESOLVED, resolution=resolution)

    def as_dict(self) -> dict[str, Any]:
        """The full letter, as ``etrmflow dlq show`` prints it."""
        return {**self.data, "status": str(self.status), "dedupe_key": self.key,
                "resolution": dict(self.resolution) if self.resolution is not None else None}


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """A dead letter whose record a replay validated and wrote to the pipeline's sinks."""

    record_sha256: str
    dedupe_key: str
    resolved_at: str
    resolved_by_run: str
    contract_version: str
    """The contract version the record passed: the current one, whatever version quarantined it."""
    batch_id: str
    """The replay batch that wrote the record (``_etrmflow_batch_id`` of its rows)."""

    def as_dict(self) -> dict[str, Any]:
        return {"resolves": {"record_sha256": self.record_sha256, "dedupe_key": self.dedupe_key},
                "resolved_at": self.resolved_at, "resolved_by_run": self.resolved_by_run,
                "contract_version": self.contract_version, "batch_id": self.batch_id}


class DeadLetterStore(Protocol):
    """Reads the dead letters of one pipeline and records their resolution.

    ``letters()`` returns every letter in the order it was stored, each with its status.
    ``resolve()`` marks letters resolved (by ``Resolution.dedupe_key`` = ``StoredLetter.key``)
    and returns how many it marked; it must be durable when it returns, must keep the letters'
    history, and must ignore a letter that is already resolved.
    """

    def describe(self) -> str: ...

    def letters(self) -> list[StoredLetter]: ...

    def resolve(self, resolutions: Sequence[Resolution]) -> int: ...
