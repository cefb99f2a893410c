"""Replay: re-validate the open dead letters of a pipeline with its contract as it compiles now,
write the records that pass through its transforms to its sinks, and mark their letters resolved.

The validators, transforms and sinks are those a run builds (``build_processor``); sinks are
opened, written batch by batch and closed as in a run. Letters are resolved only after every
sink closed successfully, so a failure leaves them open and a later replay writes the same
batches (same ids, upserts) again. Resolved letters are never replayed: a second replay does
nothing.

A replay (not a dry run) appends to the project's audit log, in the same chain as the runs:
``replay_started``, a ``batch_written`` per batch and sink, ``letters_resolved`` and
``replay_finished``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etrmflow.audit import AUDIT_LOG, AuditLog, events
from etrmflow.clock import utc_timestamp
from etrmflow.components import BatchInfo, DeadLetterSink, Sink, Violation
from etrmflow.dlq.listing import key_values
from etrmflow.dlq.model import DeadLetterStore, LetterStatus, Resolution, StoredLetter
from etrmflow.dlq.pending import (
    Pending,
    PendingBatch,
    pending_path,
    read_pending,
    write_pending,
)
from etrmflow.dlq.results import RecordOutcome, ReplayResult
from etrmflow.dlq.stores import open_store
from etrmflow.engine.processing import SECRET_VIOLATION, PageProcessor, record_sha256
from etrmflow.engine.runner import build_processor
from etrmflow.errors import EtrmflowError, RunFailed, SinkError
from etrmflow.plan import PipelinePlan, Plan
from etrmflow.plugins import Registry
from etrmflow.secrets import SecretStore

log = logging.getLogger("etrmflow.dlq")

BATCH_SIZE = 1000
"""Most records per replay batch (batches also split by the vendor page the records came from)."""
SNAPSHOT_TYPES = frozenset({"parquet", "csv"})
SNAPSHOT_NOTE = ("each run replaces this output as a whole; the next run's output holds these records "
                 "if the vendor still sends them")
"""Why a replay leaves such a sink alone: closing it would replace it with the replayed rows alone."""
PARTITION_NOTE = ("each run replaces the partitions it loads; written on their own, these records would "
                  "delete every other row of their partitions; the next run loads them if the vendor still "
                  "sends them")
"""Why a replay leaves a ``replace_partition`` sink alone: the replay is a run of its own, so the
sink would delete the rows other runs loaded in the partitions the replayed records fall in."""
ALTERED_VIOLATION = Violation(
    pointer="", keyword="x-etrmflow-record-sha256", validator="etrmflow",
    message="the record in this dead letter does not hash to its record_sha256: it was changed after it was "
            "quarantined, so it is not what the vendor sent and is not replayed; the letter stays open (put "
            "the record back as quarantined, or let the next run load the record the vendor sends)")
"""Why a replay refuses a letter edited by hand: it would load data no vendor sent, as if one had."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One quarantined record to replay, with every open letter that holds it."""

    record: Any
    record_sha256: str
    page_sha256: str
    letters: tuple[StoredLetter, ...]


def candidates(letters: Sequence[StoredLetter]) -> list[Candidate]:
    """The distinct records of the open letters, in the order they were first quarantined."""
    grouped: dict[str, list[StoredLetter]] = {}
    for letter in letters:
        if letter.status is LetterStatus.OPEN:
            grouped.setdefault(letter.record_sha256, []).append(letter)
    return [Candidate(record=found[0].record, record_sha256=digest, page_sha256=found[0].page_sha256,
                      letters=tuple(found)) for digest, found in grouped.items()]


def replay_batch_id(record_hashes: Iterable[str]) -> str:
    """Deterministic: the same records give the same id, so a repeated replay rewrites its batch."""
    text = "\n".join(["etrmflow dlq replay", *sorted(record_hashes)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def plan_batches(valid: Sequence[Candidate], *, run_id: str, pipeline: str, size: int = BATCH_SIZE,
                 pending: Pending | None = None) -> list[tuple[BatchInfo, list[Candidate]]]:
    """Batches of at most ``size`` records from one vendor page each, so that the rows' lineage
    (``_etrmflow_page_sha256``) names the page the record really came from. A record of a batch
    that ``pending`` (an unfinished replay) wrote goes into that batch again, under its id."""
    recorded = pending.batch_of() if pending else {}
    again: dict[str, list[Candidate]] = {}
    by_page: dict[str, list[Candidate]] = {}
    for candidate in valid:
        if candidate.record_sha256 in recorded:
            again.setdefault(recorded[candidate.record_sha256].batch_id, []).append(candidate)
        else:
            by_page.setdefault(candidate.page_sha256, []).append(candidate)
    batches = [(BatchInfo(run_id=run_id, batch_id=batch_id, page_sha256=group[0].page_sha256, pipeline=pipeline),
                group) for batch_id, group in again.items()]
    for page, group in by_page.items():
        for start in range(0, len(group), size):
            chunk = group[start:start + size]
            batch = BatchInfo(run_id=run_id, batch_id=replay_batch_id(c.record_sha256 for c in chunk),
                              page_sha256=page, pipeline=pipeline)
            batches.append((batch, chunk))
    return batches


def replaces_output(sink: Sink) -> bool:
    """True for a sink whose output each run replaces as a whole (Parquet, CSV, SQLite replace).

    A sink may say so itself with a boolean ``replaces_output`` attribute; built-ins are known.
    """
    declared = getattr(sink, "replaces_output", None)
    if isinstance(declared, bool):
        return declared
    return sink.type_name in SNAPSHOT_TYPES or sink.options.get("mode") == "replace"


def skip_reason(sink: Sink) -> str | None:
    """Why a replay must not write to ``sink`` (None: it may)."""
    if replaces_output(sink):
        return SNAPSHOT_NOTE
    if sink.options.get("mode") == "replace_partition":
        return PARTITION_NOTE
    return None


class _NoDeadLetters(DeadLetterSink):
    """A replay quarantines nothing new: a record that still fails keeps its open letter."""

    type_name = "none"

    def write(self, letters: list[Any]) -> int:
        raise RunFailed("a replay does not write dead letters")  # pragma: no cover - never called


class _Audit:
    """The replay's entries in the project's audit log (none for a dry run)."""

    def __init__(self, plan: Plan, pipeline: PipelinePlan, result: ReplayResult) -> None:
        self.log = None if result.dry_run else AuditLog(Path(plan.target_dir) / AUDIT_LOG)
        self.run_id = result.run_id
        self.pipeline = pipeline.name
        self.started = False

    def begin(self, result: ReplayResult, records: int) -> None:
        self.add(events.replay_started(dead_letter=result.dead_letter, letters=result.letters, records=records,
                                       contract_version=result.contract_version))
        self.started = self.log is not None

    def add(self, *entries: events.Event) -> None:
        if self.log is not None and entries:
            self.log.append(run_id=self.run_id, pipeline=self.pipeline, events=list(entries))

    def finish(self, result: ReplayResult) -> None:
        if self.started:
            self.add(events.replay_finished(
                status="failed" if result.error else "success", valid=len(result.valid),
                invalid=len(result.invalid), resolved=result.resolved, error_type=result.error_type,
                error=result.error))


def replay(plan: Plan, pipeline: PipelinePlan, registry: Registry, *, run_id: str,
           dry_run: bool = False, secrets: SecretStore | None = None) -> ReplayResult:
    """Replay the pipeline's open dead letters; never raises for a failed write (see ``error``).

    ``secrets`` is the run's secret store: sinks that connect somewhere (a database password) need it."""
    store = open_store(plan, pipeline, run_id)
    journal = pending_path(plan.target_dir, pipeline.name)
    try:
        pending = None if dry_run else read_pending(journal)
    except EtrmflowError as exc:
        pending, unreadable = None, exc
    else:
        unreadable = None
    run_id = pending.run_id if pending else run_id  # continue the replay that did not resolve its letters
    contract = pipeline.contract
    result = ReplayResult(pipeline=pipeline.name, run_id=run_id, dry_run=dry_run, contract=contract.name,
                          contract_version=contract.version, dead_letter=store.describe(),
                          started_at=utc_timestamp(), continues_replay=pending is not None)
    audit = _Audit(plan, pipeline, result)
    try:
        if unreadable is not None:
            raise unreadable
        _replay(plan, pipeline, registry, store, result, audit, secrets, (journal, pending))
    except EtrmflowError as exc:
        result.fail(exc, int(exc.exit_code))
    try:
        audit.finish(result)
    except EtrmflowError as exc:
        result.fail(exc, int(exc.exit_code))
    result.finished_at = utc_timestamp()
    return result


def _replay(plan: Plan, pipeline: PipelinePlan, registry: Registry, store: DeadLetterStore,
            result: ReplayResult, audit: _Audit, secrets: SecretStore | None,
            journal: tuple[Path, Pending | None]) -> None:
    todo = candidates(store.letters())
    result.letters = sum(len(c.letters) for c in todo)
    audit.begin(result, len(todo))
    built = build_processor(plan, pipeline, registry, result.run_id, secrets=secrets)
    verdicts = _validate(built, [c.record for c in todo])
    for candidate, found in zip(todo, verdicts):
        if _masked(candidate):  # *** is not what the vendor sent: the letter stays open
            found.append(SECRET_VIOLATION)
        if _altered(candidate):
            found[:] = [ALTERED_VIOLATION]  # whatever the edited record passes or fails
    key = pipeline.contract.primary_key
    result.invalid = [_outcome(c, key, found) for c, found in zip(todo, verdicts) if found]
    valid = [c for c, found in zip(todo, verdicts) if not found]
    path, pending = journal
    batches = plan_batches(valid, run_id=result.run_id, pipeline=pipeline.name, pending=pending)
    result.valid = [_outcome(c, key, (), batch.batch_id) for batch, group in batches for c in group]
    result.batches = [{"batch_id": b.batch_id, "page_sha256": b.page_sha256, "records": len(g)}
                      for b, g in batches]
    if result.dry_run or not batches:
        return
    recorded = (pending or Pending(run_id=result.run_id, batches=())).merged(
        [PendingBatch(batch_id=b.batch_id, page_sha256=b.page_sha256, records=tuple(c.record_sha256 for c in g))
         for b, g in batches])
    write_pending(path, recorded)  # before any row is written: a replay that stops is continued
    _load(built, batches, result, audit, resume=pending is not None)
    result.resolved = store.resolve(_resolutions(batches, result))
    write_pending(path, recorded.without({c.record_sha256 for _, group in batches for c in group}))
    audit.add(events.letters_resolved(dead_letter=result.dead_letter, resolved=result.resolved,
                                      batch_ids=[batch.batch_id for batch, _ in batches]))


def _validate(processor: PageProcessor, records: list[Any]) -> list[list[Violation]]:
    verdicts: list[list[Violation]] = []
    for start in range(0, len(records), BATCH_SIZE):
        verdicts.extend(processor.validate(records[start:start + BATCH_SIZE]))
    return verdicts


def _masked(candidate: Candidate) -> bool:
    """A letter whose record held a secret, masked when it was stored."""
    return any(isinstance(v, dict) and v.get("keyword") == SECRET_VIOLATION.keyword
               for letter in candidate.letters for v in letter.data.get("violations") or ())


def _altered(candidate: Candidate) -> bool:
    """A letter whose record no longer hashes to the ``record_sha256`` it was quarantined with."""
    return any(record_sha256(letter.record) != candidate.record_sha256 for letter in candidate.letters)


def _outcome(candidate: Candidate, key: Sequence[str], violations: Sequence[Violation],
             batch_id: str | None = None) -> RecordOutcome:
    return RecordOutcome(record_sha256=candidate.record_sha256, key=key_values(candidate.record, key),
                         letter_versions=tuple(letter.contract_version for letter in candidate.letters),
                         violations=tuple(violations), batch_id=batch_id)


def _load(built: PageProcessor, batches: list[tuple[BatchInfo, list[Candidate]]], result: ReplayResult,
          audit: _Audit, *, resume: bool) -> None:
    reasons = [(sink, skip_reason(sink)) for sink in built.sinks]
    kept = [sink for sink, why in reasons if why is None]
    result.skipped_sinks = {sink.describe(): why for sink, why in reasons if why is not None}
    if not kept:
        raise RunFailed("every sink of this pipeline replaces its output on each run (as a whole, or the "
                        "partitions it loads), so none can take replayed rows; the letters stay open (a run "
                        "with the fixed contract loads the records the vendor still sends)")
    loader = PageProcessor(plan=built.plan, run_id=built.run_id, vars=built.vars, validators=built.validators,
                           transforms=built.transforms, sinks=kept, dead_letter=_NoDeadLetters({}),
                           # Continuing a replay, as `run --resume`: a keyless sink replaces a batch
                           # that run wrote (same run and batch id) instead of adding its rows again.
                           context=dataclasses.replace(built.context, resume=resume))
    ok = False
    try:
        loader.open()
        sink_events = {sink.describe(): getattr(sink, "audit_event", "batch_written") for sink in kept}
        for batch, group in batches:
            written = loader.write([c.record for c in group], batch)
            for sink, rows in written.items():
                result.sinks[sink] = result.sinks.get(sink, 0) + rows
            audit.add(*events.sink_written(batch.batch_id, written, sink_events, records=len(group),
                                           page_sha256=batch.page_sha256))
        ok = True
    finally:
        _close(loader, ok)


def _close(loader: PageProcessor, ok: bool) -> None:
    try:
        loader.close(ok)
    except SinkError as exc:
        if ok:
            raise
        log.warning("closing the sinks after the failed replay failed too: %s", exc)


def _resolutions(batches: list[tuple[BatchInfo, list[Candidate]]], result: ReplayResult) -> list[Resolution]:
    now = utc_timestamp()
    return [Resolution(record_sha256=c.record_sha256, dedupe_key=letter.key, resolved_at=now,
                       resolved_by_run=result.run_id, contract_version=result.contract_version,
                       batch_id=batch.batch_id)
            for batch, group in batches for c in group for letter in c.letters]
