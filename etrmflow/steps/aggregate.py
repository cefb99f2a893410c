"""``aggregate``: one row per group with sums, counts, extremes, means, first and last values."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from etrmflow.engine.staging_codec import object_array
from etrmflow.steps.common import COLUMNS, StepError, options_object, require_columns
from etrmflow.steps.dataset import CHUNK_ROWS, DatasetStep, Grain
from etrmflow.steps.values import (
    divide,
    exact_sum,
    group_codes,
    has_decimals,
    is_missing,
    offset_text,
    to_decimal,
    utc_instants,
)

FUNCTIONS = ("sum", "count", "min", "max", "mean", "first", "last")
_MEASURE = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "description": "Exactly one function, naming the input column, e.g. {sum: notional}.",
    "properties": {
        **{name: {"type": "string", "minLength": 1, "description": f"{name} of this column."} for name in FUNCTIONS},
        "scale": {"type": "integer", "minimum": 0, "maximum": 28,
                  "description": "For mean of Decimals: decimals of the result, rounded half to even (default 6)."},
    },
}


class Aggregate(DatasetStep):
    """One row per group: the ``group_by`` columns, then one column per measure.

    Each measure is ``{output column: {function: input column}}``. ``sum``, ``min``, ``max``,
    ``mean``, ``first`` and ``last`` skip empty values, and give an empty value for a group with
    none (like SQL); ``count`` counts the non-empty values. ``first``/``last`` follow the
    arrival order; ``min``/``max`` of date-time text with UTC offsets (an ``updated_at`` as
    sent) give the text of the earliest or latest instant, not the smallest text. Sums of
    Decimals (``x-etrmflow-decimal`` money) are exact; their ``mean`` is rounded once, half to
    even, to ``scale`` decimals. A whole-dataset step: see pipelines.md.

    Example::

        - type: aggregate
          group_by: [counterparty_lei, currency]
          measures:
            trades: {count: trade_id}
            total_notional: {sum: notional}
            max_price: {max: price}
            average_price: {mean: price, scale: 4}
    """

    type_name: ClassVar[str] = "aggregate"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "group_by": {**COLUMNS, "description": "One output row per distinct combination of these columns."},
        "measures": {"type": "object", "minProperties": 1, "additionalProperties": _MEASURE,
                     "description": "Output column -> {function: input column}; functions: "
                                    + ", ".join(FUNCTIONS) + "."},
        "chunk_rows": CHUNK_ROWS,
    }, ["group_by", "measures"])

    def __init__(self, options: Any, *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.group_by = list(options["group_by"])
        self.measures: list[tuple[str, str, str, int]] = []
        for out, spec in options["measures"].items():
            chosen = [name for name in FUNCTIONS if name in spec]
            if len(chosen) != 1:
                raise StepError(f"aggregate: measure {out} needs exactly one of {', '.join(FUNCTIONS)}; "
                                f"it has {', '.join(chosen) or 'none'}")
            if "scale" in spec and chosen[0] != "mean":
                raise StepError(f"aggregate: measure {out}: scale applies to mean only")
            self.measures.append((out, chosen[0], spec[chosen[0]], int(spec.get("scale", 6))))
        clash = sorted({out for out, *_ in self.measures} & set(self.group_by))
        if clash:
            raise StepError(f"aggregate: measure {', '.join(clash)} has the name of a group_by column")

    def group_key(self) -> list[str]:
        return self.group_by

    def output_grain(self) -> Grain:
        return Grain(key=tuple(self.group_by), columns=(*self.group_by, *(out for out, *_ in self.measures)))

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        require_columns(frame, [*self.group_by, *{column for _, _, column, _ in self.measures}], "aggregate")
        frame = frame.reset_index(drop=True)
        codes, out = group_codes(frame, self.group_by)
        members = _members(codes, len(out))
        for name, function, column, scale in self.measures:
            out[name] = _measure(frame[column], function, members, scale, f"aggregate: {name}")
        self.count("rows", len(frame))
        self.count("groups", len(out))
        return out


def _members(codes: np.ndarray, groups: int) -> list[np.ndarray]:
    """Row positions of each group, in arrival order."""
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=groups))[:-1] if groups else []
    return np.split(order, bounds) if groups else []


def _measure(series: pd.Series, function: str, members: list[np.ndarray], scale: int, what: str) -> Any:
    if function in ("min", "max") and offset_text(series):
        return _extreme_instants(series, function, members, what)
    exact = has_decimals(series)
    values = series.tolist()
    reduce = _REDUCERS[function]
    try:
        results = [reduce([values[i] for i in rows if not is_missing(values[i])], exact, scale, what)
                   for rows in members]
    except TypeError as exc:  # e.g. text among numbers: say which measure, not only what Python says
        problem = "the values do not compare" if function in ("min", "max") else "the values are not all numbers"
        raise StepError(f"{what}: {function} of column {series.name}: {problem} ({exc}); cast the column "
                        f"before the step") from None
    if function == "count":
        return np.array(results, dtype="int64")
    if exact or series.dtype == object:
        return object_array(results)
    dtype = _result_dtype(series, function)
    if dtype == "float64":
        return np.array([np.nan if r is None else r for r in results], dtype="float64")
    return pd.array(results, dtype=dtype)


def _extreme_instants(series: pd.Series, function: str, members: list[np.ndarray], what: str) -> Any:
    """min/max of date-time text with UTC offsets: the text of the earliest or latest instant
    (as text, 02:30+02:00 would beat 02:10+01:00, which is forty minutes later)."""
    instants = utc_instants(series, where=f"{what}: {function} of column {series.name!r}").tolist()
    values = series.tolist()
    pick = min if function == "min" else max
    results = []
    for rows in members:
        present = [int(i) for i in rows if not pd.isna(instants[i])]
        results.append(values[pick(present, key=instants.__getitem__)] if present else None)
    return object_array(results) if series.dtype == object else pd.array(results, dtype=series.dtype)


def _result_dtype(series: pd.Series, function: str) -> Any:
    """Numbers keep their kind in a form that can be empty (a group may have no value)."""
    types = pd.api.types
    if function == "mean":
        return "float64"
    if types.is_bool_dtype(series.dtype):
        return "Int64" if function == "sum" else "boolean"
    if types.is_integer_dtype(series.dtype):
        return "Int64"
    if types.is_float_dtype(series.dtype):
        return "float64"
    return series.dtype if function != "sum" else object


def _sum(values: list[Any], exact: bool, scale: int, what: str) -> Any:
    if not values:
        return None
    if exact:
        return exact_sum(to_decimal(v, what) for v in values)
    if all(isinstance(v, (int, np.integer)) for v in values):
        return sum(values)
    return math.fsum(values)  # correctly rounded, whatever the order


def _mean(values: list[Any], exact: bool, scale: int, what: str) -> Any:
    if not values:
        return None
    if exact:
        return divide(exact_sum(to_decimal(v, what) for v in values), to_decimal(len(values), what), scale)
    return float(np.mean(np.asarray(values, dtype="float64")))


_REDUCERS: dict[str, Callable[[list[Any], bool, int, str], Any]] = {
    "sum": _sum,
    "mean": _mean,
    "count": lambda values, exact, scale, what: len(values),
    "min": lambda values, exact, scale, what: min(values) if values else None,
    "max": lambda values, exact, scale, what: max(values) if values else None,
    "first": lambda values, exact, scale, what: values[0] if values else None,
    "last": lambda values, exact, scale, what: values[-1] if values else None,
}
