"""The fields of each audit event, built from the values the engine already has. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

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


def run_finished(*, status: str, counts: Mapping[str, Any], error_type: str | None) -> Event:
    return "run_finished", {"status": status, "counts": dict(counts), "error_type": error_type}


def page_fetched(page: Page) -> Event:
    """What the vendor sent: the request (secrets redacted) and hashes of the body and the records."""
    return "page_fetched", {
        "connector": page.connector, "stream": page.stream, "partition": page.partition, "page": page.index,
        "method": page.method, "url": page.url, "status": page.status, "byte_count": page.byte_count,
        "body_sha256": page.sha256, "records": len(page.records), "records_sha256": records_sha256(page.records),
        "fetched_at": page.fetched_at}


def page_processed(batch_id: str, outcome: Outcome, dead_letter: str) -> list[Event]:
    """What was done with the page: validated, quarantined (if any), written to each sink."""
    events: list[Event] = [("batch_validated", {"batch_id": batch_id, "valid": outcome.valid,
                                                "quarantined": outcome.quarantined})]
    if outcome.quarantined:
        events.append(("batch_quarantined", {"batch_id": batch_id, "dead_letter": dead_letter,
                                             "quarantined": outcome.quarantined,
                                             "new": outcome.dead_letters_new}))
    events.extend(("batch_written", {"batch_id": batch_id, "sink": sink, "rows": rows})
                  for sink, rows in outcome.written.items())
    return events
