"""Transports for connectors, built the one way a run builds them: for a pipeline's source, and
for the connectors its sinks write to (``Sink.connector_option``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from etrmflow.clock import Clock
from etrmflow.components import Kind
from etrmflow.engine.breaker import BreakerBoard
from etrmflow.engine.ratelimit import RateLimiter
from etrmflow.engine.validation import build_component
from etrmflow.errors import EtrmflowError
from etrmflow.plan import ConnectorPlan, PipelinePlan, SinkConnectorPlan
from etrmflow.plugins import Registry
from etrmflow.secrets import SecretStore


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkConnector:
    """A connector a sink writes to, as ``SinkContext.connectors`` holds it.

    ``plan`` holds the connector and the request policy of its ``defaults``; ``new_transport()``
    builds a new, unopened transport for it. That transport has its own rate limiter and
    breakers: they belong to the event loop that enters it (the sink's, in the worker thread),
    not to the run's loop, so the source's fetches and the sink's writes are counted apart.
    """

    plan: SinkConnectorPlan
    new_transport: Callable[[], Any]


def connector_transport(registry: Registry, connector: ConnectorPlan, *, secrets: SecretStore, clock: Clock,
                        vars: Mapping[str, Any], quota: RateLimiter | None = None,
                        breakers: BreakerBoard | None = None) -> Any:
    """A new, unopened transport for ``connector`` with its auth (an async context manager)."""
    auth = build_component(registry, Kind.AUTH, connector.auth, clock=clock)
    cls = registry.get(Kind.TRANSPORT, connector.type)
    if cls is None:
        raise EtrmflowError(f"no transport type '{connector.type}' is registered")
    return cls({}, connector=connector, auth=auth, secrets=secrets, clock=clock, vars=vars,
               paginator_factory=lambda c: build_component(registry, Kind.PAGINATOR, c),
               quota=quota, breakers=breakers)


def sink_connectors(pipeline: PipelinePlan, registry: Registry, *, secrets: SecretStore, clock: Clock,
                    vars: Mapping[str, Any]) -> dict[str, SinkConnector]:
    """What the pipeline's sinks need to write to the connectors they name."""
    return {name: SinkConnector(plan=target, new_transport=functools.partial(
                connector_transport, registry, target.connector, secrets=secrets, clock=clock, vars=vars))
            for name, target in pipeline.sink_connectors.items()}
