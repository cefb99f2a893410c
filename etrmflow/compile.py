"""From checked, rendered documents to a Plan: bind defaults, resolve references. Pure."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from etrmflow import __version__
from etrmflow.config.project import Loaded, Project, ResolvedPipeline
from etrmflow.durations import parse_duration
from etrmflow.plan import (
    BreakerPolicy,
    ComponentPlan,
    ConnectorPlan,
    ContractPlan,
    InvalidPolicy,
    PipelinePlan,
    Plan,
    RatePolicy,
    ResponseRule,
    RetryPolicy,
    SinkConnectorPlan,
    StreamPlan,
    TimeoutPolicy,
    WindowsPlan,
)

DEFAULT_CONCURRENCY = 4


def compile_plan(project: Project, pipelines: list[ResolvedPipeline]) -> Plan:
    return Plan(
        etrmflow_version=__version__,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        project_name=project.name,
        project_root=str(project.root),
        target_dir=str(project.target_dir),
        vars=dict(project.vars),
        pipelines=tuple(compile_pipeline(project, resolved) for resolved in pipelines),
    )


def compile_pipeline(project: Project, resolved: ResolvedPipeline) -> PipelinePlan:
    data = resolved.pipeline.data
    connector = compile_connector(resolved.connector)
    stream = compile_stream(resolved.connector.data, data["source"], connector)
    return PipelinePlan(
        name=data["name"],
        file=resolved.pipeline.document.display,
        description=data.get("description", ""),
        tags=tuple(data.get("tags") or ()),
        connector=connector,
        stream=stream,
        contract=compile_contract(resolved.contract),
        on_invalid=InvalidPolicy(**(data.get("on_invalid") or {})),
        transforms=tuple(_component(step) for step in data.get("transforms") or ()),
        sinks=tuple(_component(sink) for sink in data.get("sinks") or _default_sinks(project, data["name"])),
        dead_letter=_component(data.get("dead_letter") or _default_dead_letter(project, data["name"])),
        sink_connectors={name: compile_sink_connector(loaded) for name, loaded in resolved.sink_connectors.items()},
    )


def _component(block: Mapping[str, Any]) -> ComponentPlan:
    return ComponentPlan(type=block["type"], options={k: v for k, v in block.items() if k != "type"})


def _relative_to_root(project: Project, path: Path) -> str:
    try:
        return os.path.relpath(path, project.root)
    except ValueError:
        return str(path)


def _default_sinks(project: Project, pipeline: str) -> list[dict[str, Any]]:
    database = _relative_to_root(project, project.target_dir / "etrmflow.db")
    return [{"type": "sqlite", "path": database, "table": pipeline, "mode": "upsert"}]


def _default_dead_letter(project: Project, pipeline: str) -> dict[str, Any]:
    path = _relative_to_root(project, project.target_dir / "dead_letter" / f"{pipeline}.jsonl")
    return {"type": "jsonl", "path": path}


def compile_connector(loaded: Loaded) -> ConnectorPlan:
    data = loaded.data
    defaults = data.get("defaults") or {}
    tls = data.get("tls") or {}
    return ConnectorPlan(
        name=data["name"], type=data.get("type", "http"), file=loaded.document.display,
        base_url=data["base_url"],
        auth=_component(data.get("auth") or {"type": "none"}),
        headers=dict(data.get("headers") or {}), params=dict(data.get("params") or {}),
        tls_verify=tls.get("verify", True), ca_bundle=tls.get("ca_bundle"),
        concurrency=defaults.get("concurrency", DEFAULT_CONCURRENCY),
        rate_limit=tuple(_rate(block) for block in _as_list(defaults.get("rate_limit"))),
        **({"max_response_size": parse_size(defaults["max_response_size"])} if "max_response_size" in defaults else {}),
    )


_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_size(value: int | str) -> int:
    """A size in bytes: a number of bytes, or ``512KiB``, ``256MiB``, ``1GB``... (the schema's pattern)."""
    if isinstance(value, int):
        return value
    text = value.strip()
    number = text.rstrip("".join(sorted({c for unit in _SIZE_UNITS for c in unit})))
    return max(1, int(float(number) * _SIZE_UNITS[text[len(number):].strip()]))


def compile_sink_connector(loaded: Loaded) -> SinkConnectorPlan:
    """A connector a sink writes to: its requests follow the connector's ``defaults``."""
    data = loaded.data
    defaults = data.get("defaults") or {}
    return SinkConnectorPlan(
        connector=compile_connector(loaded), timeout=_timeout(defaults.get("timeout") or {}),
        retry=_retry(defaults.get("retry") or {}), breaker=_breaker(defaults.get("breaker") or {}),
        response_rules=tuple(_response_rule(rule) for rule in data.get("response_rules") or ()))


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _rate(block: Mapping[str, Any]) -> RatePolicy:
    return RatePolicy(requests=block["requests"], per=parse_duration(block.get("per", "1s")))


def _breaker(block: Mapping[str, Any]) -> BreakerPolicy:
    fields = {k: v for k, v in block.items() if k in ("failure_threshold", "failure_ratio", "window", "enabled")}
    if "cooldown" in block:
        fields["cooldown"] = parse_duration(block["cooldown"])
    return BreakerPolicy(**fields)


def compile_stream(connector_data: Mapping[str, Any], source: Mapping[str, Any],
                   connector: ConnectorPlan) -> StreamPlan:
    stream = connector_data["streams"][source["stream"]]
    defaults = connector_data.get("defaults") or {}
    policy = _merge(defaults, {k: v for k, v in stream.items() if k in ("concurrency", "timeout", "retry", "breaker")})
    return StreamPlan(
        name=source["stream"], method=stream.get("method", "GET"), path=stream["path"],
        params={**connector.params, **(stream.get("params") or {}), **(source.get("params") or {})},
        headers={**connector.headers, **(stream.get("headers") or {})},
        body=stream.get("body"), records=stream.get("records", "$"),
        paginator=_component(stream.get("paginator") or {"type": "single"}),
        concurrency=min(policy.get("concurrency", connector.concurrency), connector.concurrency),
        timeout=_timeout(policy.get("timeout") or {}),
        retry=_retry(policy.get("retry") or {}),
        breaker=_breaker(policy.get("breaker") or {}),
        windows=WindowsPlan(**stream["windows"]) if stream.get("windows") else None,
        idempotency_key_header=stream.get("idempotency_key_header"),
        response_rules=tuple(_response_rule(rule) for rule in
                             [*(connector_data.get("response_rules") or ()), *(stream.get("response_rules") or ())]),
    )


def _response_rule(block: Mapping[str, Any]) -> ResponseRule:
    status = block.get("status")
    statuses = tuple(_expand_statuses(status if isinstance(status, list) else [status])) if status else ()
    return ResponseRule(action=block["action"], status=statuses, path=block.get("path"),
                        equals=block.get("equals"), has_equals="equals" in block, message=block.get("message", ""))


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Stream policies override connector defaults key by key, nested blocks included."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _timeout(block: Mapping[str, Any]) -> TimeoutPolicy:
    return TimeoutPolicy(**{key: parse_duration(value) for key, value in block.items()})


def _retry(block: Mapping[str, Any]) -> RetryPolicy:
    fields: dict[str, Any] = {}
    if "max_attempts" in block:
        fields["max_attempts"] = block["max_attempts"]
    backoff = block.get("backoff") or {}
    for key in ("initial", "max"):
        if key in backoff:
            fields[key] = parse_duration(backoff[key])
    for key in ("multiplier", "jitter"):
        if key in backoff:
            fields[key] = backoff[key]
    if "on_status" in block:
        fields["on_status"] = tuple(sorted(set(_expand_statuses(block["on_status"]))))
    for key in ("on_connection_error", "on_timeout"):
        if key in block:
            fields[key] = block[key]
    if "budget" in block:
        fields["budget"] = parse_duration(block["budget"])
    retry_after = block.get("retry_after") or {}
    if "honour" in retry_after:
        fields["retry_after_honour"] = retry_after["honour"]
    if "max" in retry_after:
        fields["retry_after_max"] = parse_duration(retry_after["max"])
    return RetryPolicy(**fields)


def _expand_statuses(values: list[int | str]) -> list[int]:
    statuses: list[int] = []
    for value in values:
        if isinstance(value, int):
            statuses.append(value)
        elif "-" in value:
            low, high = (int(part) for part in value.split("-"))
            statuses.extend(range(low, high + 1))
        else:
            statuses.append(int(value))
    return statuses


def compile_contract(loaded: Loaded) -> ContractPlan:
    """A contract document as a run applies it (also used by ``etrmflow test``)."""
    data = loaded.data
    keys = data.get("primary_key") or ()
    return ContractPlan(
        name=data["name"], version=str(data["version"]), file=loaded.document.display,
        primary_key=(keys,) if isinstance(keys, str) else tuple(keys),
        schema=data["schema"], rules=tuple(data.get("rules") or ()),
        validators=tuple(_component(block) for block in data.get("validators") or ()),
    )
