"""Run compiled pipelines: pages stream from the transport through a bounded queue into the
pipeline's worker thread, so the event loop keeps fetching while records are checked and written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etrmflow import __version__
from etrmflow.audit import AUDIT_LOG, AuditLog, events
from etrmflow.audit.bodies import BODIES, BodyStore
from etrmflow.clock import Clock, utc_timestamp
from etrmflow.components import Kind, Page, SinkContext
from etrmflow.engine.breaker import BreakerBoard
from etrmflow.engine.checkpoint import Checkpoint
from etrmflow.engine.collector import fewer_collections
from etrmflow.engine.connections import connector_transport, sink_connectors
from etrmflow.engine.context import PIPELINE
from etrmflow.engine.processing import PageOutcome, PageProcessor
from etrmflow.engine.ratelimit import RateLimiter
from etrmflow.engine.resume import (
    Committer,
    finish_checkpoint,
    sink_events,
    starting_point,
)
from etrmflow.engine.staging import StagingPlace
from etrmflow.engine.validation import build_component, build_validators, contract_info
from etrmflow.errors import (
    EtrmflowError,
    ExitCode,
    RunFailed,
    StorageError,
    disk_problem,
    write_failure,
)
from etrmflow.plan import PipelinePlan, Plan
from etrmflow.plugins import Registry
from etrmflow.results import PipelineResult, Progress, RunResults, Status
from etrmflow.secrets import SecretStore, redact

log = logging.getLogger("etrmflow.run")
PAGES_IN_FLIGHT = 4
"""Pages fetched ahead of processing: bounds memory whatever the run length."""


@dataclass(slots=True)
class RunOptions:
    secrets: SecretStore
    clock: Clock = field(default_factory=Clock)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    resume: bool = False
    """Continue each pipeline's failed or killed run from its checkpoint, if it has one."""
    quotas: dict[str, RateLimiter] = field(default_factory=dict)
    breakers: dict[str, BreakerBoard] = field(default_factory=dict)
    """Per connector, shared by every pipeline of the run: a vendor's quota and its endpoints'
    health do not reset because the next pipeline starts."""
    threads: int = 1
    """Pipelines run at the same time (each keeps its own worker thread)."""
    on_progress: Callable[[Progress], None] | None = None
    """Called on the event loop after each page and once when a pipeline ends; must be quick."""
    keep_bodies: bool = False
    """Keep every page's raw response body in ``<target>/bodies`` (content-addressed), as
    evidence that reproduces the page byte for byte."""


def new_results(run_id: str) -> RunResults:
    return RunResults(run_id=run_id, etrmflow_version=__version__, started_at=utc_timestamp())


async def run_plan(plan: Plan, registry: Registry, options: RunOptions) -> RunResults:
    """Run the plan's pipelines, up to ``options.threads`` at a time; results keep the plan's
    order. Never raises for a failed pipeline."""
    with fewer_collections():
        return await _run_plan(plan, registry, options)


async def _run_plan(plan: Plan, registry: Registry, options: RunOptions) -> RunResults:
    results = new_results(options.run_id)
    if options.threads <= 1:  # strictly one after another: a later pipeline sees the breakers as left
        for pipeline in plan.pipelines:
            results.pipelines.append(await run_pipeline(plan, pipeline, registry, options))
    else:
        slots = asyncio.Semaphore(options.threads)

        async def limited(pipeline: PipelinePlan) -> PipelineResult:
            async with slots:
                return await run_pipeline(plan, pipeline, registry, options)

        results.pipelines.extend(await asyncio.gather(*(limited(p) for p in plan.pipelines)))
    results.finished_at = utc_timestamp()
    results.audit = audit_summary(Path(plan.target_dir))
    return results


def audit_summary(target_dir: Path) -> dict[str, Any] | None:
    """Where the audit log is and its last entry when the run ended (None if there is none):
    recorded in run_results.json, it shows whether entries were later cut from the log's end."""
    try:
        last = AuditLog(target_dir / AUDIT_LOG).last()
    except EtrmflowError as exc:
        log.warning("%s", exc)
        return None
    if last is None:
        return None
    return {"path": AUDIT_LOG, "entries": last[0], "last_hash": last[1]}


def build_processor(plan: Plan, pipeline: PipelinePlan, registry: Registry, run_id: str,
                    resume: bool = False, secrets: SecretStore | None = None,
                    clock: Clock | None = None) -> PageProcessor:
    validators = build_validators(pipeline.contract, registry, plan.project_root)
    transforms = [build_component(registry, Kind.TRANSFORM, c, project_dir=plan.project_root)
                  for c in pipeline.transforms]
    sinks = [build_component(registry, Kind.SINK, c) for c in pipeline.sinks]
    dead_letter = build_component(registry, Kind.DEAD_LETTER, pipeline.dead_letter)
    context = SinkContext(pipeline=pipeline.name, run_id=run_id, contract=contract_info(pipeline.contract),
                          project_dir=plan.project_root, target_dir=plan.target_dir, resume=resume,
                          secrets=secrets, connectors=sink_connectors(
                              pipeline, registry, secrets=secrets or SecretStore(), clock=clock or Clock(),
                              vars=plan.vars))
    staging = StagingPlace(folder=Path(plan.target_dir) / "state", pipeline=pipeline.name, run_id=run_id,
                           resume=resume, checkpoint=Checkpoint(plan.target_dir, pipeline).path)
    return PageProcessor(plan=pipeline, run_id=run_id, vars=plan.vars, validators=validators,
                         transforms=transforms, sinks=sinks, dead_letter=dead_letter, context=context,
                         staging=staging)


def build_transport(plan: Plan, pipeline: PipelinePlan, registry: Registry, options: RunOptions) -> Any:
    connector = pipeline.connector
    quota = options.quotas.setdefault(connector.name, RateLimiter(list(connector.rate_limit), options.clock))
    breakers = options.breakers.setdefault(connector.name, BreakerBoard(options.clock))
    return connector_transport(registry, connector, secrets=options.secrets, clock=options.clock, vars=plan.vars,
                               quota=quota, breakers=breakers)


async def run_pipeline(plan: Plan, pipeline: PipelinePlan, registry: Registry, options: RunOptions) -> PipelineResult:
    result = PipelineResult(name=pipeline.name, run_id=options.run_id, started_at=utc_timestamp())
    started = time.perf_counter()
    named = PIPELINE.set(pipeline.name)  # log lines about this pipeline's requests say so
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"etrmflow-{pipeline.name}")
    loop = asyncio.get_running_loop()
    checkpoint = Checkpoint(plan.target_dir, pipeline, plan.project_root)
    processor: PageProcessor | None = None
    audit: AuditLog | None = None
    ok = False
    transport: Any = None
    try:
        # In the worker: a resume hashes the reference data, and building validators reads it;
        # the event loop keeps fetching for the run's other pipelines meanwhile.
        start = await loop.run_in_executor(executor, starting_point, checkpoint, options, result)
        audit = AuditLog(Path(plan.target_dir) / AUDIT_LOG)
        await _audit(executor, audit, result, events.run_started(resumed_from_page=result.resumed_from_page))
        processor = await loop.run_in_executor(executor, functools.partial(
            build_processor, plan, pipeline, registry, result.run_id, resume=start is not None,
            secrets=options.secrets, clock=options.clock))
        result.dead_letter = processor.dead_letter.describe()
        await loop.run_in_executor(executor, processor.open)
        transport = build_transport(plan, pipeline, registry, options)
        transport.keep_bodies = options.keep_bodies
        bodies = BodyStore(Path(plan.target_dir) / BODIES) if options.keep_bodies else None
        transitions = getattr(getattr(transport, "breakers", None), "transitions", [])
        earlier = len(transitions)  # the board is shared with earlier pipelines of the run
        try:
            await _stream_pages(transport, pipeline, Committer(processor, checkpoint, result.run_id, audit, bodies),
                                executor, result, start,
                                lambda: _report(options, result, transport, started))
        finally:
            counters = transport.counters
            result.counts.requests, result.counts.retries, result.counts.bytes = (
                counters.requests, counters.retries, counters.bytes)
            result.breaker_transitions = [
                {"endpoint": t.endpoint, "from": t.from_state, "to": t.to_state, "reason": t.reason}
                for t in transitions[earlier:] if _used(transport, t.endpoint)]
        _check_accounting(result)
        _check_thresholds(pipeline, result)
        held_back = await loop.run_in_executor(executor, processor.finish, _audit_finish_batch(audit, result, processor))
        _add_written(result, held_back)
        result.steps = processor.chain.counters()
        ok = True
    except EtrmflowError as exc:
        _fail(result, exc)
    except (OSError, sqlite3.Error) as exc:  # a sink, step or plugin that let a full disk through
        if disk_problem(exc) is None:
            raise  # anything else is a bug: exit 3 with a crash log
        _fail(result, StorageError(f"{pipeline.name}: a write failed: {write_failure(exc)}"))
    finally:
        if processor is not None:
            try:
                await loop.run_in_executor(executor, processor.close, ok)
            except EtrmflowError as exc:
                ok = False
                _fail(result, exc)
            # A sink that sends requests (http) says how many it retried; apart from the source's.
            result.counts.sink_retries = sum(getattr(sink, "request_retries", 0) for sink in processor.sinks)
        if audit is not None:
            await _audit_finish(executor, audit, result)
        executor.shutdown(wait=True)
        finish_checkpoint(checkpoint, result, ok)
        if processor is not None:
            processor.chain.close()  # after the checkpoint: staging lives as long as one refers to it
        result.finished_at = utc_timestamp()
        result.duration_s = round(time.perf_counter() - started, 3)
        _finish_timings(result, processor.timings if processor is not None else {})
        _report(options, result, transport, started, done=True)
        PIPELINE.reset(named)
    return result


def _report(options: RunOptions, result: PipelineResult, transport: Any, started: float,
            done: bool = False) -> None:
    if options.on_progress is None:
        return
    counters = getattr(transport, "counters", None)
    retries = counters.retries if counters is not None else result.counts.retries
    transitions = getattr(getattr(transport, "breakers", None), "transitions", [])
    options.on_progress(Progress(
        pipeline=result.name, pages=result.counts.pages, records=result.counts.fetched,
        quarantined=result.counts.quarantined, retries=retries, open_breakers=_open_endpoints(transitions),
        elapsed_s=time.perf_counter() - started, done=done))


def _used(transport: Any, endpoint: str) -> bool:
    """Did the pipeline's transport call the endpoint? Pipelines running side by side share a
    connector's breaker board, but each lists only the transitions of endpoints it used (all of
    them, for a transport that does not say which it used)."""
    used = getattr(transport, "endpoints", None)
    return used is None or endpoint in used


def _open_endpoints(transitions: list[Any]) -> int:
    latest = {t.endpoint: t.to_state for t in transitions}
    return sum(1 for state in latest.values() if state == "open")


STAGES = ("fetch", "validate", "quarantine", "transform", "write", "checkpoint")


def _finish_timings(result: PipelineResult, processing: dict[str, float]) -> None:
    """Merge the worker thread's stage times; ``checkpoint`` arrives as the whole commit time,
    and is what the commit spent outside processing: audit entries and the checkpoint save."""
    spent = {**result.timings, **processing}
    spent["checkpoint"] = max(0.0, spent.get("checkpoint", 0.0) - sum(processing.values()))
    result.timings = {stage: round(spent.get(stage, 0.0), 3) for stage in STAGES}


def _audit_finish_batch(audit: AuditLog, result: PipelineResult,
                        processor: PageProcessor) -> Callable[[Any, dict[str, int]], None]:
    """Records each batch a whole-dataset step releases at the end, as it is written (in the
    worker thread, which is where ``finish`` runs)."""
    kinds = sink_events(processor)

    def record(batch: Any, written: dict[str, int]) -> None:
        audit.append(run_id=result.run_id, pipeline=result.name,
                     events=events.sink_written(batch.batch_id, written, kinds, stage="finish"))
    return record


async def _audit(executor: ThreadPoolExecutor, audit: AuditLog, result: PipelineResult,
                 *entries: events.Event) -> None:
    """Append in the worker thread: an fsync must never stall the event loop's fetches."""
    if not entries:
        return
    append = functools.partial(audit.append, run_id=result.run_id, pipeline=result.name, events=list(entries))
    await asyncio.get_running_loop().run_in_executor(executor, append)


async def _audit_finish(executor: ThreadPoolExecutor, audit: AuditLog, result: PipelineResult) -> None:
    try:
        await _audit(executor, audit, result, events.run_finished(
            status=str(result.status), counts=dataclasses.asdict(result.counts), error_type=result.error_type,
            error=result.error))
    except EtrmflowError as exc:
        _fail(result, exc)


def _fail(result: PipelineResult, exc: BaseException) -> None:
    result.status = Status.FAILED
    if result.error is None:
        result.error = redact(str(exc))
        result.error_type = type(exc).__name__
        result.exit_code = int(getattr(exc, "exit_code", ExitCode.RUN_FAILED))
        extra = {"pipeline": result.name, "error_type": result.error_type}
        if getattr(exc, "correlation_id", None):  # the request that failed (see etrmflow.engine.http)
            extra["correlation_id"] = exc.correlation_id  # type: ignore[attr-defined]
        log.error("pipeline %s failed: %s", result.name, result.error, extra=extra)


_DONE = object()


async def _stream_pages(transport: Any, pipeline: PipelinePlan, committer: Committer,
                        executor: ThreadPoolExecutor, result: PipelineResult, start: Any,
                        on_page: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=PAGES_IN_FLIGHT)
    timings = result.timings
    async with transport:
        producer = asyncio.create_task(_produce(transport, pipeline, queue, start))
        try:
            while True:
                waited = time.perf_counter()
                item = await queue.get()
                timings["fetch"] = timings.get("fetch", 0.0) + time.perf_counter() - waited
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                outcome, spent = await loop.run_in_executor(executor, _timed_commit, committer, item)
                timings["checkpoint"] = timings.get("checkpoint", 0.0) + spent
                _add(result, item, outcome)
                on_page()
                _check_max_count(pipeline, result)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)


def _timed_commit(committer: Committer, page: Page) -> tuple[PageOutcome, float]:
    """In the worker thread, so the time excludes the hand-off between threads."""
    began = time.perf_counter()
    outcome = committer.commit(page)
    return outcome, time.perf_counter() - began


async def _produce(transport: Any, pipeline: PipelinePlan, queue: asyncio.Queue[Any], start: Any) -> None:
    """Fetch pages into the queue; whatever stops the walk, the consumer hears of it."""
    try:
        async for page in transport.pages(pipeline.stream, start):
            await queue.put(page)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # a bug must surface as a crash, never as a silent hang
        await queue.put(exc)
        return
    await queue.put(_DONE)


def _add(result: PipelineResult, page: Page, outcome: PageOutcome) -> None:
    counts = result.counts
    counts.pages += 1
    counts.fetched += outcome.fetched
    counts.valid += outcome.valid
    counts.quarantined += outcome.quarantined
    counts.dead_letters_new += outcome.dead_letters_new
    _add_written(result, outcome.written)
    for name, records in outcome.drift.items():
        if name not in result.drift:
            log.warning("schema drift in %s: field %r is not declared in the contract schema (first seen on "
                        "page %d)", result.name, name, page.index, extra={"pipeline": result.name})
        result.drift[name] = result.drift.get(name, 0) + records
    log.debug("page %d of %s: %d records, %d quarantined", page.index, page.stream, outcome.fetched,
              outcome.quarantined, extra={"pipeline": result.name, "correlation_id": page.correlation_id or None})


def _add_written(result: PipelineResult, written: dict[str, int]) -> None:
    for sink, rows in written.items():
        result.sinks[sink] = result.sinks.get(sink, 0) + rows
    result.counts.written = min(result.sinks.values()) if result.sinks else 0


def _check_accounting(result: PipelineResult) -> None:
    counts = result.counts
    if counts.fetched != counts.valid + counts.quarantined:
        raise RunFailed(f"accounting mismatch: fetched {counts.fetched} != valid {counts.valid} + "
                        f"quarantined {counts.quarantined}")


def _check_max_count(pipeline: PipelinePlan, result: PipelineResult) -> None:
    limit = pipeline.on_invalid.max_count
    if limit is not None and result.counts.quarantined > limit:
        raise RunFailed(f"{result.counts.quarantined} records quarantined, more than on_invalid.max_count "
                        f"({limit}); the dead letters hold them with their reasons")


def _check_thresholds(pipeline: PipelinePlan, result: PipelineResult) -> None:
    _check_max_count(pipeline, result)
    limit = pipeline.on_invalid.max_ratio
    ratio = result.counts.invalid_ratio
    if limit is not None and ratio > limit:
        raise RunFailed(f"{ratio:.2%} of records quarantined, more than on_invalid.max_ratio ({limit:.2%})")
