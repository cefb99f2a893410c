"""The compiled plan: what ``etrmflow run`` executes and ``target/plan.json`` shows.

A leaf module of frozen dataclasses. It holds no secret value: credentials appear only as
``${secret:NAME}`` markers, resolved by the transport at request time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PLAN_VERSION = 1
PLAN_SCHEMA = "https://etrmflow.dev/schemas/plan/v1.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentPlan:
    type: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 5
    initial: float = 0.5
    max: float = 30.0
    multiplier: float = 2.0
    jitter: str = "full"
    on_status: tuple[int, ...] = (429, 502, 503, 504, 520, 521, 522, 523, 524)
    on_connection_error: bool = True
    on_timeout: bool = True
    retry_after_honour: bool = True
    retry_after_max: float = 120.0
    budget: float | None = None
    """Longest time one request may take, attempts and waits together; None: no limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutPolicy:
    connect: float = 10.0
    read: float = 60.0
    total: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    failure_threshold: int = 5
    """Consecutive failures that open the breaker."""
    cooldown: float = 60.0
    failure_ratio: float | None = None
    """Alternatively: open when failures / outcomes over the last ``window`` requests exceed this."""
    window: int = 20
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RatePolicy:
    requests: int
    per: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseRule:
    """What a response means when its status (and optionally a body field) matches.

    ``action``: ``retry`` (a transient vendor error behind a 200), ``fail`` (give up: not
    retried), or ``no_data`` (an empty result, not a failure; ends the walk).
    """

    action: str
    status: tuple[int, ...] = ()
    path: str | None = None
    equals: Any = None
    has_equals: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowsPlan:
    """A long date range split into windows, each paginated on its own."""

    start: str
    end: str
    step: str
    tz: str = "UTC"
    format: str = "date"
    end_inclusive: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamPlan:
    name: str
    method: str
    path: str
    """Appended to the connector's base_url (or an absolute URL)."""
    params: dict[str, Any]
    headers: dict[str, Any]
    body: Any
    records: str
    paginator: ComponentPlan
    concurrency: int
    timeout: TimeoutPolicy
    retry: RetryPolicy
    breaker: BreakerPolicy = BreakerPolicy()
    windows: WindowsPlan | None = None
    idempotency_key_header: str | None = None
    response_rules: tuple[ResponseRule, ...] = ()
    json_answer: bool = True
    """A successful answer must be JSON (it carries records). A write-back sink's requests need
    only the status: a vendor acknowledging with plain text has still booked them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorPlan:
    name: str
    type: str
    file: str
    base_url: str
    auth: ComponentPlan
    headers: dict[str, Any]
    params: dict[str, Any]
    tls_verify: bool
    ca_bundle: str | None
    concurrency: int
    rate_limit: tuple[RatePolicy, ...] = ()
    max_response_size: int = 256 * 1024 * 1024
    """The largest response body accepted, in bytes, counted once decompressed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkConnectorPlan:
    """A connector a sink writes to (a sink's ``connector`` option), with the request policy of
    the connector's ``defaults`` and its response rules: a sink's requests follow them."""

    connector: ConnectorPlan
    timeout: TimeoutPolicy
    retry: RetryPolicy
    breaker: BreakerPolicy
    response_rules: tuple[ResponseRule, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractPlan:
    name: str
    version: str
    file: str
    primary_key: tuple[str, ...]
    schema: dict[str, Any]
    rules: tuple[dict[str, Any], ...]
    validators: tuple[ComponentPlan, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidPolicy:
    action: str = "quarantine"
    max_ratio: float | None = None
    max_count: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelinePlan:
    name: str
    file: str
    description: str
    tags: tuple[str, ...]
    connector: ConnectorPlan
    stream: StreamPlan
    contract: ContractPlan
    on_invalid: InvalidPolicy
    transforms: tuple[ComponentPlan, ...]
    sinks: tuple[ComponentPlan, ...]
    dead_letter: ComponentPlan
    sink_connectors: dict[str, SinkConnectorPlan] = dataclasses.field(default_factory=dict)
    """The connectors the sinks write to, by name (empty when no sink names one)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    etrmflow_version: str
    generated_at: str
    project_name: str
    project_root: str
    target_dir: str
    vars: dict[str, Any]
    pipelines: tuple[PipelinePlan, ...]
    plan_version: int = PLAN_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {"$schema": PLAN_SCHEMA, **dataclasses.asdict(self)}
