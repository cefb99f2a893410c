"""Where a run starts (fresh, or from a checkpoint) and what it leaves behind for the next one."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from etrmflow.audit import AuditLog, events
from etrmflow.audit.bodies import BodyStore, Kept
from etrmflow.components import Page
from etrmflow.engine.checkpoint import Checkpoint, request_from_dict
from etrmflow.engine.processing import PageOutcome, PageProcessor, batch_id
from etrmflow.errors import EtrmflowError, PaginationError, RunFailed
from etrmflow.plan import ComponentPlan
from etrmflow.results import PipelineResult

log = logging.getLogger("etrmflow.run")


class ResumeError(EtrmflowError):
    """The checkpoint cannot be used: the pipeline changed since the run that left it."""


def starting_point(checkpoint: Checkpoint, options: Any, result: PipelineResult) -> dict[str, Any] | None:
    """None for a fresh walk; else where the walk resumes (and the result takes over its run id)."""
    state = checkpoint.load()
    if not options.resume:
        if state is not None:
            log.warning("an earlier run of %s (run %s) did not finish; starting over "
                        "(etrmflow run --resume continues it instead)", result.name, state["run_id"])
            # Starting over discards that run's staged output: its checkpoint must go with it, or
            # a later --resume would publish what it staged after this point and nothing before.
            checkpoint.clear()
        return None
    if state is None:
        log.info("nothing to resume for %s: no unfinished run; running from the start", result.name)
        return None
    if state["fingerprint"] != checkpoint.fingerprint:
        raise ResumeError(f"{result.name} changed since run {state['run_id']} stopped (its files, or a reference "
                          f"file its steps or validators read, or a table of a reference database they read), "
                          f"so it cannot be resumed; run it without --resume to start over (idempotent sinks "
                          f"add no duplicates), or put the reference data back as it was")
    result.run_id = state["run_id"]
    result.resumed_from_page = state["pages_done"]
    checkpoint.resumed = state
    log.info("resuming %s (run %s) after %d page(s)", result.name, state["run_id"], state["pages_done"])
    following = state["next_request"]
    return {"request": request_from_dict(following) if following else None,
            "index": state["pages_done"], "offset": state["offset"], "window": state.get("window")}


class Committer:
    """Process a page, then record durably that the walk may continue after it.

    With a ``BodyStore``, the page's raw body is kept first, so the entry that names it never
    precedes it on disk."""

    def __init__(self, processor: PageProcessor, checkpoint: Checkpoint, run_id: str,
                 audit: AuditLog | None = None, bodies: BodyStore | None = None) -> None:
        self.processor = processor
        self.checkpoint = checkpoint
        self.run_id = run_id
        self.audit = audit
        self.bodies = bodies
        self.sink_events = sink_events(processor)
        self._warned_no_body = False
        self.repeats = RepeatGuard(processor.plan.stream.paginator, checkpoint.resumed)
        self.interrupted = checkpoint.in_flight()
        """The page the resumed run was writing when it stopped, and the batch id its rows carry."""

    def commit(self, page: Page) -> PageOutcome:
        self.repeats.check(page)  # before anything of the page is kept or written
        fetched = events.page_fetched(page, self._keep_body(page))
        batch = self._batch_of(page)
        self.checkpoint.note_in_flight(run_id=self.run_id, partition=page.partition, page=page.index, batch_id=batch)
        try:
            outcome = self.processor.process(page, batch)
        except Exception:
            # What the vendor sent, and what was quarantined, even if a later stage failed.
            try:
                self._audit([fetched, *self._stored_letters(page)])
            except Exception as audit_error:  # noqa: BLE001 - the page's own failure is the one to report
                log.error("%s: the audit entries of failed page %d could not be written either: %s",
                          self.processor.plan.name, page.index, audit_error)
            raise
        # Evidence before the checkpoint: a crash in between repeats the page, never loses its entries.
        fields = {sink.describe(): sink.audit_fields(batch) for sink in self.processor.sinks}
        self._audit([fetched, *events.page_processed(
            batch, outcome, self.processor.dead_letter.describe(), self.sink_events, fields)])
        self.checkpoint.save(run_id=self.run_id, next_request=page.next_request, pages_done=page.index + 1,
                             offset=page.offset + len(page.records), window=page.window,
                             window_label=page.partition or None, recent_pages=self.repeats.recent())
        return outcome

    def _batch_of(self, page: Page) -> str:
        """The page's batch id; the page a resumed run was writing keeps the id it had then, so
        its rows replace those of the interrupted attempt whatever the vendor sends now."""
        if self.interrupted is not None and self.interrupted[:2] == (page.partition, page.index):
            batch, self.interrupted = self.interrupted[2], None
            return batch
        return batch_id(self.processor.plan, self.processor.vars, page)

    def _stored_letters(self, page: Page) -> list[events.Event]:
        stored = self.processor.quarantined
        if stored is None or stored[0] != page.index or not stored[2]:
            return []
        _, batch, letters, new = stored
        return [events.batch_quarantined(batch, self.processor.dead_letter.describe(), letters, new)]

    def _keep_body(self, page: Page) -> Kept | None:
        if self.bodies is None:
            return None
        if page.body is None:
            if not self._warned_no_body:
                self._warned_no_body = True
                log.warning("%s: the transport of connector %s does not hand over raw bodies, so none are "
                            "kept", self.processor.plan.name, page.connector)
            return None
        return self.bodies.keep(page.body, page.sha256)

    def _audit(self, entries: list[events.Event]) -> None:
        if self.audit is not None:
            self.audit.append(run_id=self.run_id, pipeline=self.processor.plan.name, events=entries)


REMEMBERED_PAGES = 32
"""How many of a walk's latest pages a checkpoint remembers for ``RepeatGuard``: a vendor that
ignores the page parameter repeats the page just before, which a resumed run must still see."""
_PAGE_PARAMETER = {"page_number": ("page number", "param", "page"), "offset": ("offset", "offset_param", "offset"),
                   "cursor": ("cursor", "param", "cursor")}


class RepeatGuard:
    """Refuses a page whose body is byte for byte a page the vendor already sent in this walk
    (one date window). Different requests answered with the same page mean the vendor ignores
    what changed between them, typically a page parameter it does not know: the walk would load
    that page again and again (append sinks: the same rows again) until ``max_pages``, or end
    on a page count having loaded one page many times. Two pages with identical bodies cannot
    hold different records, so a legitimate walk never trips it. Empty pages are never refused:
    they add nothing, and the paginators judge them.

    Only hashes are kept: every page hash of the walk in memory (about 200 bytes a page), the
    latest ``REMEMBERED_PAGES`` in the checkpoint for a resumed run."""

    def __init__(self, paginator: ComponentPlan, resumed: dict[str, Any] | None = None) -> None:
        self.paginator = paginator
        self.window: int | None = resumed.get("window") if resumed else None
        remembered = [(int(index), str(sha)) for index, sha in (resumed or {}).get("recent_pages") or ()]
        self.seen: dict[str, int] = {sha: index for index, sha in remembered}
        self.latest: deque[tuple[int, str]] = deque(remembered, maxlen=REMEMBERED_PAGES)

    def check(self, page: Page) -> None:
        if page.window != self.window:  # a new date window is a new walk
            self.window, self.seen = page.window, {}
            self.latest.clear()
        if not page.records or not page.sha256:
            return
        earlier = self.seen.get(page.sha256)
        if earlier is not None:
            raise PaginationError(self._message(page, earlier), url=page.url, status=page.status)
        self.seen[page.sha256] = page.index
        self.latest.append((page.index, page.sha256))

    def recent(self) -> list[tuple[int, str]]:
        return list(self.latest)

    def _message(self, page: Page, earlier: int) -> str:
        where = f" of date window {page.window + 1} ({page.partition})" if page.window is not None else ""
        return (f"stream {page.connector}.{page.stream}: page {page.index + 1}{where} ({page.method} {page.url}) is "
                f"byte for byte the same as page {earlier + 1}: the vendor sent a page of this walk again, so the "
                f"walk goes round in circles (a vendor that ignores the paging parameter sends the same page every "
                f"time); {self._hint()}. The repeated page was not written")

    def _hint(self) -> str:
        kind, options = self.paginator.type, self.paginator.options
        if kind in _PAGE_PARAMETER:
            what, key, default = _PAGE_PARAMETER[kind]
            return (f"the {kind} paginator sends the {what} in the query parameter {options.get(key, default)!r} "
                    f"(its {key}: option): check in the vendor's API documentation that this is the name it reads")
        if kind == "next_link":
            return "its next links lead back to pages already read: check the paginator's path: and rel: options"
        return f"check the stream's paginator ({kind}) against the vendor's API documentation"


def sink_events(processor: PageProcessor) -> dict[str, str]:
    """Each sink's audit event (``batch_written``, or ``batch_posted`` for a sink that posts)."""
    return {sink.describe(): getattr(sink, "audit_event", "batch_written") for sink in processor.sinks}


def finish_checkpoint(checkpoint: Checkpoint, result: PipelineResult, ok: bool) -> None:
    """A finished run needs no checkpoint; a failed one keeps it and says what is missing.

    A run that a policy failed (a quarantine threshold) fetched everything and was rejected:
    resuming it would publish what the gate refused, so it leaves no checkpoint.
    """
    if ok or result.error_type == RunFailed.__name__:
        checkpoint.clear()
        return
    state = checkpoint.load()
    if state is None:
        result.missing = "every page: the run stopped before its first page was written"
        result.resumable = False
    elif state["next_request"] is None and state.get("window") is not None:
        result.missing = f"every date window after window {state['window'] + 1} ({state.get('window_label')})"
    elif state["next_request"] is None:
        result.missing = "no page: every page was fetched; a resumed run only finishes the outputs"
    else:
        following = state["next_request"]
        where = (f" of date window {state['window'] + 1} ({state.get('window_label')})"
                 if state.get("window") is not None else "")
        result.missing = (f"pages after page {state['pages_done']}{where} (next request: {following['method']} "
                          f"{following['url']} {following['params']})")
