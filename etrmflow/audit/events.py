"""The fields of each audit event, built from the values the engine already has. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from etrmflow.audit.bodies import Kept
from etrmflow.audit.chain import records_sha256
from etrmflow.audit.log import Event
from etrmflow.components import Page


class Outcome(Protocol):
    """What the engine's ``PageOutcome`` tells about a processed page."""

    valid: int
    quarantined: int
    dead_letters_new: int
    written: dict[str, int]


def run_started(*, resumed_from_page: int | None) -> Event:
    return "run_started", {"resumed_from_page": resumed_from_page}


def run_finished(*, status: str, counts: Mapping[str, Any], error_type: str | None,
                 error: str | None = None) -> Event:
    """``error`` is the run's message, credentials already masked."""
    return "run_finished", {"status": status, "counts": dict(counts), "error_type": error_type, "error": error}


def page_fetched(page: Page, kept: Kept | None = None) -> Event:
    """What the vendor sent: the request (secrets redacted), hashes of the body and the records,
    the request's correlation id and, when bodies are kept, how this one was kept."""
    return "page_fetched", {
        "connector": page.connector, "stream": page.stream, "partition": page.partition, "page": page.index,
        "method": page.method, "url": page.url, "status": page.status, "byte_count": page.byte_count,
        "body_sha256": page.sha256, "records": len(page.records), "records_sha256": records_sha256(page.records),
        "fetched_at": page.fetched_at, "elapsed_ms": round(page.elapsed_ms, 3), "attempts": page.attempts,
        "correlation_id": page.correlation_id or None,
        "body_kept": kept.how if kept else None, "kept_sha256": kept.sha256 if kept else None}


def page_processed(batch_id: str, outcome: Outcome, dead_letter: str,
                   sink_events: Mapping[str, str] | None = None,
                   sink_fields: Mapping[str, Mapping[str, Any]] | None = None) -> list[Event]:
    """What was done with the page: validated, quarantined (if any), then per sink written (or
    posted: ``sink_events`` maps a sink's description to its ``Sink.audit_event``; ``sink_fields``
    to its ``Sink.audit_fields``)."""
    events: list[Event] = [("batch_validated", {"batch_id": batch_id, "valid": outcome.valid,
                                                "quarantined": outcome.quarantined})]
    if outcome.quarantined:
        events.append(batch_quarantined(batch_id, dead_letter, outcome.quarantined, outcome.dead_letters_new))
    written = sink_written(batch_id, outcome.written, sink_events)
    fields = sink_fields or {}
    events.extend((name, {**data, **fields.get(data["sink"], {})}) for name, data in written)
    return events


def batch_quarantined(batch_id: str, dead_letter: str, quarantined: int, new: int) -> Event:
    return "batch_quarantined", {"batch_id": batch_id, "dead_letter": dead_letter, "quarantined": quarantined,
                                 "new": new}


def sink_written(batch_id: str | None, written: Mapping[str, int],
                 sink_events: Mapping[str, str] | None = None, **fields: Any) -> list[Event]:
    """One entry per sink: the rows of the batch it took."""
    events = sink_events or {}
    return [(events.get(sink, "batch_written"), {"batch_id": batch_id, "sink": sink, "rows": rows, **fields})
            for sink, rows in written.items()]


def replay_started(*, dead_letter: str, letters: int, records: int, contract_version: str) -> Event:
    return "replay_started", {"dead_letter": dead_letter, "letters": letters, "records": records,
                              "contract_version": contract_version}


def letters_resolved(*, dead_letter: str, resolved: int, batch_ids: list[str]) -> Event:
    return "letters_resolved", {"dead_letter": dead_letter, "resolved": resolved, "batch_ids": batch_ids}


def replay_finished(*, status: str, valid: int, invalid: int, resolved: int, error_type: str | None,
                    error: str | None) -> Event:
    return "replay_finished", {"status": status, "valid": valid, "invalid": invalid, "resolved": resolved,
                               "error_type": error_type, "error": error}
