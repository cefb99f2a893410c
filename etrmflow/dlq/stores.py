"""Which store reads which dead-letter type, and how a pipeline's store is opened."""

from __future__ import annotations

from collections.abc import Callable

from etrmflow.components import ContractInfo, SinkContext
from etrmflow.dlq.jsonl import JsonlDeadLetterStore
from etrmflow.dlq.model import DeadLetterStore
from etrmflow.dlq.sqlite import SqliteDeadLetterStore
from etrmflow.errors import ConfigError, ConfigIssue, Location
from etrmflow.plan import ComponentPlan, PipelinePlan, Plan

StoreFactory = Callable[[ComponentPlan, SinkContext], DeadLetterStore]

STORES: dict[str, StoreFactory] = {
    "jsonl": JsonlDeadLetterStore.from_plan,
    "sqlite": SqliteDeadLetterStore.from_plan,
}
"""Dead-letter ``type`` -> the factory of its store. A type missing here cannot be listed or
replayed (its sink still works in runs)."""


def sink_context(plan: Plan, pipeline: PipelinePlan, run_id: str) -> SinkContext:
    """The context the pipeline's sinks would be opened with by a run with ``run_id``."""
    contract = pipeline.contract
    info = ContractInfo(name=contract.name, version=contract.version, primary_key=contract.primary_key,
                        schema=contract.schema)
    return SinkContext(pipeline=pipeline.name, run_id=run_id, contract=info, project_dir=plan.project_root,
                       target_dir=plan.target_dir)


def open_store(plan: Plan, pipeline: PipelinePlan, run_id: str = "dlq") -> DeadLetterStore:
    """The store of the pipeline's dead-letter sink; ConfigError (exit 2) if its type has none."""
    component = pipeline.dead_letter
    factory = STORES.get(component.type)
    if factory is None:
        known = ", ".join(sorted(STORES))
        raise ConfigError(ConfigIssue(
            location=Location(file=pipeline.file), key_path="dead_letter.type",
            message=f"etrmflow dlq cannot read dead letters of type '{component.type}'",
            hint=f"it reads: {known}"))
    return factory(component, sink_context(plan, pipeline, run_id))
