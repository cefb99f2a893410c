"""Built-in plugin: transform steps beyond the basic column operations (see ``etrmflow.steps``).

Reshaping (``explode_legs``), units and currencies (``normalise_units``, ``normalise_currency``),
delivery periods (``expand_intervals``, ``settlement_cycle``), reference data (``join``) and the
project's own Python (``python``). All run batch by batch.
"""

from __future__ import annotations

from etrmflow import hookimpl
from etrmflow.components import Transform
from etrmflow.steps.periods import ExpandIntervals
from etrmflow.steps.python_step import PythonStep
from etrmflow.steps.reference_join import Join
from etrmflow.steps.reshape import ExplodeLegs
from etrmflow.steps.settlement import SettlementCycle
from etrmflow.steps.units import NormaliseCurrency, NormaliseUnits


@hookimpl
def etrmflow_transform_types() -> list[type[Transform]]:
    return [ExplodeLegs, NormaliseUnits, NormaliseCurrency, ExpandIntervals, SettlementCycle, Join, PythonStep]
