"""Run results: what ``target/run_results.json`` holds and what the run prints. A leaf module."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

RESULTS_VERSION = 1
RESULTS_SCHEMA = "https://etrmflow.dev/schemas/run_results/v1.json"


class Status(str, enum.Enum):
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class Counts:
    pages: int = 0
    fetched: int = 0
    valid: int = 0
    quarantined: int = 0
    written: int = 0
    dead_letters_new: int = 0
    requests: int = 0
    retries: int = 0
    """The source's requests that were retried."""
    bytes: int = 0
    sink_retries: int = 0
    """Requests of the sinks that were retried (an ``http`` sink's POSTs): counted apart from
    ``retries``, as the sinks' requests are not in ``requests`` either."""

    @property
    def invalid_ratio(self) -> float:
        return self.quarantined / self.fetched if self.fetched else 0.0


@dataclass(slots=True)
class PipelineResult:
    name: str
    run_id: str
    status: Status = Status.SUCCESS
    counts: Counts = field(default_factory=Counts)
    sinks: dict[str, int] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0
    error: str | None = None
    error_type: str | None = None
    exit_code: int = 0
    """What this pipeline alone would exit with: 1 for a failed run, 2 for rejected credentials."""
    dead_letter: str = ""
    resumed_from_page: int | None = None
    """Set when this run continued an earlier one: the pages it had already written."""
    missing: str | None = None
    """For a failed run: what was not fetched, to be fetched by ``etrmflow run --resume``."""
    resumable: bool = True
    """False when the failed run wrote nothing: a resume would only start over."""
    breaker_transitions: list[dict[str, Any]] = field(default_factory=list)
    """Every circuit-breaker state change: endpoint, from, to, reason."""
    drift: dict[str, int] = field(default_factory=dict)
    """Schema drift: fields the contract schema does not declare, with how many records had them
    (valid or not), over the pages this run processed."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage (fetch, validate, quarantine, transform, write, checkpoint),
    rounded to the millisecond. ``fetch`` is the time spent waiting for the next page."""
    steps: dict[str, dict[str, int]] = field(default_factory=dict)
    """Counters of transform steps that report some (e.g. a reconcile's matched keys and breaks
    by reason), keyed ``transforms[<index>].<type>``; set when the run finished its outputs."""

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = str(self.status)
        data["counts"]["invalid_ratio"] = round(self.counts.invalid_ratio, 6)
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A snapshot of one running pipeline, handed to ``RunOptions.on_progress`` after each page."""

    pipeline: str
    pages: int
    records: int
    quarantined: int
    retries: int
    open_breakers: int
    """Endpoints whose circuit breaker is open right now (shared by the connector's pipelines)."""
    elapsed_s: float
    done: bool = False

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(slots=True)
class RunResults:
    run_id: str
    etrmflow_version: str
    started_at: str
    finished_at: str = ""
    exit_code: int = 0
    pipelines: list[PipelineResult] = field(default_factory=list)
    audit: dict[str, Any] | None = None
    """The audit log when the run ended: ``path`` (relative to the target folder), ``entries``
    (the last entry's seq) and ``last_hash``; None when there is no log. ``etrmflow audit
    verify`` compares it with the log, which shows entries cut from the log's end."""

    def as_dict(self) -> dict[str, Any]:
        return {"$schema": RESULTS_SCHEMA, "results_version": RESULTS_VERSION, "run_id": self.run_id,
                "etrmflow_version": self.etrmflow_version, "started_at": self.started_at,
                "finished_at": self.finished_at, "exit_code": self.exit_code,
                "pipelines": [p.as_dict() for p in self.pipelines], "audit": self.audit}
