"""What a replay did: ``target/dlq_replay_results.json`` and the summary it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from etrmflow.components import Violation
from etrmflow.dlq.listing import printable, violation_text
from etrmflow.dlq.model import SHORT_HASH
from etrmflow.secrets import redact

REPLAY_RESULTS_VERSION = 1
REPLAY_RESULTS_SCHEMA = "https://etrmflow.dev/schemas/dlq_replay_results/v1.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordOutcome:
    """One replayed record: its key, the versions that quarantined it, and its verdict now."""

    record_sha256: str
    key: dict[str, Any]
    letter_versions: tuple[str, ...]
    violations: tuple[Violation, ...] = ()
    """Empty when the record passes the current contract."""
    batch_id: str | None = None
    """The replay batch that wrote it (None for an invalid record, or in a dry run)."""

    def as_dict(self) -> dict[str, Any]:
        return {"record_sha256": self.record_sha256, "key": self.key, "letters": len(self.letter_versions),
                "letter_versions": list(self.letter_versions), "batch_id": self.batch_id,
                "violations": [v.as_dict() for v in self.violations]}


@dataclass(slots=True, kw_only=True)
class ReplayResult:
    """Counts are of records (a record held by several open letters is replayed once)."""

    pipeline: str
    run_id: str
    dry_run: bool
    contract: str
    contract_version: str
    dead_letter: str
    started_at: str
    continues_replay: bool = False
    """True when this replay continues one that wrote rows but did not resolve their letters."""
    finished_at: str = ""
    letters: int = 0
    """Open letters replayed."""
    valid: list[RecordOutcome] = field(default_factory=list)
    invalid: list[RecordOutcome] = field(default_factory=list)
    resolved: int = 0
    """Letters marked resolved."""
    batches: list[dict[str, Any]] = field(default_factory=list)
    sinks: dict[str, int] = field(default_factory=dict)
    skipped_sinks: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    exit_code: int = 0

    @property
    def replayed(self) -> int:
        return len(self.valid) + len(self.invalid)

    def fail(self, exc: Exception, exit_code: int) -> None:
        self.error, self.error_type, self.exit_code = redact(str(exc)), type(exc).__name__, exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "$schema": REPLAY_RESULTS_SCHEMA, "results_version": REPLAY_RESULTS_VERSION,
            "run_id": self.run_id, "pipeline": self.pipeline, "dry_run": self.dry_run,
            "contract": {"name": self.contract, "version": self.contract_version},
            "dead_letter": self.dead_letter, "continues_replay": self.continues_replay,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "exit_code": self.exit_code, "error": self.error, "error_type": self.error_type,
            "counts": {"letters": self.letters, "replayed": self.replayed, "valid": len(self.valid),
                       "still_invalid": len(self.invalid), "resolved": self.resolved},
            "sinks": dict(self.sinks), "skipped_sinks": dict(self.skipped_sinks), "batches": list(self.batches),
            "valid": [o.as_dict() for o in self.valid], "still_invalid": [o.as_dict() for o in self.invalid],
        }


def _key_text(outcome: RecordOutcome) -> str:
    # printable: a key with a lone surrogate or a control character as its escape
    return ", ".join("-" if v is None else printable(str(v)) for v in outcome.key.values()) or "-"


def summary(result: ReplayResult) -> str:
    """What ``etrmflow dlq replay`` prints."""
    mark = "FAIL" if result.error else "DRY " if result.dry_run else "OK  "
    written = "would be written to sinks" if result.dry_run else "written to sinks"
    head = (f"{mark} {result.pipeline}: replayed {result.replayed}, now valid {len(result.valid)} ({written}), "
            f"still invalid {len(result.invalid)} against contract {result.contract} v{result.contract_version}")
    lines = [head]
    if result.continues_replay:
        lines.append(f"       continues replay {result.run_id}, which wrote rows but did not resolve their letters")
    lines += [f"       {sink}: {rows} rows" for sink, rows in result.sinks.items()]
    lines += [f"       {sink}: skipped ({why})" for sink, why in result.skipped_sinks.items()]
    if result.error:
        lines.append(f"       error: {result.error}")
    elif not result.dry_run:
        lines.append(f"       dead letters: {result.dead_letter} ({result.resolved} resolved)")
    for outcome in result.invalid:
        first = outcome.violations[0].as_dict() if outcome.violations else {}
        more = f" (+{len(outcome.violations) - 1} more)" if len(outcome.violations) > 1 else ""
        lines.append(f"       still invalid {outcome.record_sha256[:SHORT_HASH]}  {_key_text(outcome)}: "
                     f"{printable(violation_text(first))}{more}")
    if result.dry_run:
        lines.append("Dry run: nothing was written.")
    return "\n".join(lines)
