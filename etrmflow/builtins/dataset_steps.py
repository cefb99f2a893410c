"""Built-in whole-dataset steps: they see the rows of every page together (see
``etrmflow.steps.dataset.DatasetStep``)."""

from __future__ import annotations

from etrmflow import hookimpl
from etrmflow.components import Transform
from etrmflow.steps.aggregate import Aggregate
from etrmflow.steps.dedupe import Dedupe
from etrmflow.steps.reconcile import Reconcile
from etrmflow.steps.vwap import Vwap


@hookimpl
def etrmflow_transform_types() -> list[type[Transform]]:
    return [Dedupe, Vwap, Aggregate, Reconcile]
