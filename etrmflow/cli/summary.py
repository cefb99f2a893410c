"""Human-readable summaries of a plan and of run results."""

from __future__ import annotations

from typing import Any

from etrmflow.plan import ComponentPlan, PipelinePlan, Plan, RetryPolicy
from etrmflow.results import RunResults, Status


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _options(component: ComponentPlan) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in component.options.items())
    return f"{component.type}" + (f" ({shown})" if shown else "")


def _statuses(codes: tuple[int, ...]) -> str:
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _retry(policy: RetryPolicy) -> str:
    after = (f"Retry-After honoured up to {_seconds(policy.retry_after_max)}" if policy.retry_after_honour
             else "Retry-After ignored")
    return (f"{policy.max_attempts} attempts, backoff {_seconds(policy.initial)}..{_seconds(policy.max)} "
            f"x{policy.multiplier:g} {policy.jitter} jitter, on {_statuses(policy.on_status)}; {after}")


def describe_pipeline(pipeline: PipelinePlan) -> list[str]:
    connector, stream, contract = pipeline.connector, pipeline.stream, pipeline.contract
    timeout = stream.timeout
    keys = ", ".join(contract.primary_key) or "none"
    rules = f"; {len(contract.rules)} rule(s)" if contract.rules else ""
    rows = [
        ("source", f"{connector.name}.{stream.name}: {stream.method} {connector.base_url.rstrip('/')}"
                   f"/{stream.path.lstrip('/')}"),
        ("auth", _options(ComponentPlan(type=connector.auth.type, options={
            k: v for k, v in connector.auth.options.items() if k in ("token_url", "in", "name", "scopes")}))),
        ("paginator", _options(stream.paginator)),
        ("records", stream.records),
        ("concurrency", f"{stream.concurrency} (connector {connector.concurrency})"),
        ("timeout", f"connect {_seconds(timeout.connect)}, read {_seconds(timeout.read)}, total {_seconds(timeout.total)}"),
        ("retry", _retry(stream.retry)),
        ("tls", "verify" if connector.tls_verify else "NOT verified"),
        ("contract", f"{contract.name} v{contract.version} (primary key {keys}{rules})"),
        ("on_invalid", _invalid(pipeline)),
        ("transforms", ", ".join(step.type for step in pipeline.transforms) or "none"),
        ("sinks", "; ".join(_options(sink) for sink in pipeline.sinks)),
        ("dead letter", _options(pipeline.dead_letter)),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"pipeline {pipeline.name} ({pipeline.file})"] + [f"  {label:<{width}}  {text}" for label, text in rows]


def _invalid(pipeline: PipelinePlan) -> str:
    policy = pipeline.on_invalid
    parts = [policy.action]
    if policy.max_ratio is not None:
        parts.append(f"fail above {policy.max_ratio:.2%}")
    if policy.max_count is not None:
        parts.append(f"fail above {policy.max_count} records")
    return ", ".join(parts)


def describe_plan(plan: Plan) -> str:
    lines: list[str] = []
    for pipeline in plan.pipelines:
        lines.extend(describe_pipeline(pipeline))
    return "\n".join(lines)


def drift_text(drift: dict[str, int]) -> str:
    """``fieldA (12), fieldB (3)``: the most frequent undeclared field first."""
    return ", ".join(f"{name} ({count})" for name, count in sorted(drift.items(), key=lambda i: (-i[1], i[0])))


def timings_text(timings: dict[str, float]) -> str:
    """``fetch 1.23s, validate 0.40s, ...`` in stage order."""
    return ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in timings.items())


def describe_results(results: RunResults) -> str:
    lines = []
    for result in results.pipelines:
        counts = result.counts
        mark = "OK  " if result.status is Status.SUCCESS else "FAIL"
        resumed = f" (resumed run {result.run_id} after page {result.resumed_from_page})" \
            if result.resumed_from_page is not None else ""
        lines.append(f"{mark} {result.name}{resumed}: pages {counts.pages}, fetched {counts.fetched}, valid {counts.valid}, "
                     f"quarantined {counts.quarantined}, written {counts.written}, retries {counts.retries} "
                     f"in {result.duration_s:.2f}s")
        for sink, rows in result.sinks.items():
            lines.append(f"       {sink}: {rows} rows")
        if result.timings:
            lines.append(f"       timings: {timings_text(result.timings)}")
        if counts.quarantined:
            lines.append(f"       dead letters: {result.dead_letter} ({counts.dead_letters_new} new)")
        if result.drift:
            lines.append(f"       schema drift: {drift_text(result.drift)}")
        if result.error:
            lines.append(f"       error: {result.error}")
        if result.missing:
            lines.append(f"       missing: {result.missing}")
            if result.resumable:
                lines.append("       fetch only what is missing with: etrmflow run --resume ...")
    passed = sum(1 for r in results.pipelines if r.status is Status.SUCCESS)
    lines.append(f"Done. {passed} of {len(results.pipelines)} pipeline(s) succeeded (run {results.run_id}).")
    return "\n".join(lines)


def plugin_rows(entries: list[Any]) -> str:
    rows = [(str(e.kind), e.name, e.origin, e.cls.summary()) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{k:<{widths[0]}}  {n:<{widths[1]}}  {o:<{widths[2]}}  {s}" for k, n, o, s in rows)
