"""Delivery periods into settlement intervals (``expand_intervals``).

Intervals are cut in UTC, where every hour is an hour: a Berlin delivery day of 23 hours (spring)
gives 23 hourly or 92 quarter-hourly intervals, one of 25 hours (autumn) 25 or 100, a GB day
46 or 50 half-hours. Local clock times are a view of those instants, never the grid itself.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from etrmflow.components import Transform
from etrmflow.steps.common import COLUMNS, StepError, options_object, require_columns
from etrmflow.steps.reshape import INDEX_BASE
from etrmflow.steps.values import (
    SCALE,
    Inexact,
    decimal_of,
    is_missing,
    repeat_rows,
    row_names,
    utc_instants,
)

RESOLUTIONS: dict[str, int] = {"PT1H": 3600, "PT30M": 1800, "PT15M": 900}
"""Interval lengths, in seconds."""

_NAME = {"type": "string", "minLength": 1}
_OUTPUTS = {"interval_start": "interval_start", "interval_end": "interval_end", "interval_index": "interval_index"}


class ExpandIntervals(Transform):
    """One row per settlement interval of each row's delivery period.

    ``start`` and ``end`` hold timezone-aware timestamps or ISO 8601 text with an offset. Each
    row becomes one row per interval of ``resolution`` (PT1H, PT30M or PT15M), cut in UTC so a
    23-hour spring day gives 23 hourly rows and a 25-hour autumn day 25. New columns: the
    interval's start and end (UTC instants), its number within the period (from 0 unless
    ``index_base: 1``) and, when named, its start and end in local time of ``tz`` (the market's
    zone). A period that is not a whole number of intervals, that does not start on the
    resolution's grid of local time in ``tz`` (an hourly period from 00:30), that ends before it
    starts, or that would give more than ``max_intervals`` rows fails the step.

    ``divide`` spreads energy quantities evenly over the intervals. Floats are divided; a
    Decimal must divide exactly (24 MWh over 24 hours) unless ``scale`` is set: then each part
    has ``scale`` decimal places and the parts add up exactly to the total, the first intervals
    taking one unit of the last place more when the total does not divide evenly (10.00 over 3:
    3.34, 3.33, 3.33).

    Example::

        - {type: expand_intervals, start: delivery_start, end: delivery_end, resolution: PT1H, tz: Europe/Berlin}
    """

    type_name: ClassVar[str] = "expand_intervals"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "start": {**_NAME, "description": "The column holding the start of the delivery period."},
        "end": {**_NAME, "description": "The column holding the end of the delivery period (exclusive)."},
        "resolution": {"enum": list(RESOLUTIONS), "description": "The interval length: PT1H, PT30M or PT15M."},
        "tz": {"type": "string", "format": "timezone",
               "description": "The market's IANA zone, e.g. Europe/Berlin (for the local time columns)."},
        "interval_start": {**_NAME, "description": "Name of the interval start column (default interval_start), "
                                                   "UTC."},
        "interval_end": {**_NAME, "description": "Name of the interval end column (default interval_end), UTC."},
        "interval_index": {**_NAME, "description": "Name of the column numbering the intervals of each period "
                                                   "(default interval_index)."},
        "index_base": INDEX_BASE,
        "local_start": {**_NAME, "description": "Also add the interval start in local time of tz, in a column "
                                                "of this name."},
        "local_end": {**_NAME, "description": "Also add the interval end in local time of tz, in a column of "
                                              "this name."},
        "divide": {**COLUMNS, "description": "Energy quantity columns to spread evenly over the intervals."},
        "scale": {**SCALE, "description": "Decimal places of each Decimal part of a divided quantity "
                                          "(the parts add up exactly); without it a division must be exact."},
        "max_intervals": {"type": "integer", "minimum": 1,
                          "description": "Most intervals one row may give (default 100000); a longer period "
                                         "fails the step rather than exhaust memory."},
    }, ["start", "end", "resolution", "tz"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.seconds = RESOLUTIONS[options["resolution"]]
        self.names = {key: options.get(key, default) for key, default in _OUTPUTS.items()}
        self.local = {key: options[key] for key in ("local_start", "local_end") if key in options}
        new = [*self.names.values(), *self.local.values()]
        if len(set(new)) != len(new):
            raise ValueError(f"the new columns need distinct names; got {', '.join(new)}")

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        divide = list(self.options.get("divide", []))
        require_columns(frame, [self.options["start"], self.options["end"], *divide], self.type_name)
        taken = [name for name in [*self.names.values(), *self.local.values()] if name in frame.columns]
        if taken:
            raise StepError(f"{self.type_name}: column(s) {', '.join(taken)} already exist; name the new "
                            f"columns otherwise (interval_start, interval_end, interval_index, local_start, local_end)")
        starts, counts = self._periods(frame)
        out = repeat_rows(frame, counts)
        # In microseconds, or nanoseconds if the instants came so: a cast to nanoseconds wraps
        # instants after 2262 around into the 1700s without a word.
        unit = "ns" if starts.dt.unit == "ns" else "us"
        first = np.repeat(starts.dt.tz_localize(None).to_numpy().astype(f"datetime64[{unit}]"), counts)
        number = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        length = np.timedelta64(self.seconds, "s")
        begins = pd.DatetimeIndex(first + number * length).tz_localize("UTC")
        ends = begins + length
        out[self.names["interval_start"]] = begins
        out[self.names["interval_end"]] = ends
        out[self.names["interval_index"]] = number + self.options.get("index_base", 0)
        for key, instants in (("local_start", begins), ("local_end", ends)):
            if key in self.local:
                out[self.local[key]] = instants.tz_convert(self.options["tz"])
        for column in divide:
            out[column] = self._divide(frame, column, counts)
        return out

    def _periods(self, frame: pd.DataFrame) -> tuple[pd.Series, np.ndarray]:
        """UTC starts and the interval count of each row, after checking every period."""
        start, end = self.options["start"], self.options["end"]
        starts = utc_instants(frame[start], where=f"{self.type_name}: column {start!r}")
        ends = utc_instants(frame[end], where=f"{self.type_name}: column {end!r}")
        empty = [p for p in range(len(frame)) if pd.isna(starts.iloc[p]) or pd.isna(ends.iloc[p])]
        if empty:
            raise StepError(f"{self.type_name}: {row_names(frame, empty)} ha{'s' if len(empty) == 1 else 've'} "
                            f"no {start} or {end}")
        seconds = ((ends - starts).dt.total_seconds()).to_numpy()
        self._refuse(frame, seconds <= 0, f"ends at or before its start ({start} >= {end})")
        self._refuse(frame, seconds % self.seconds != 0,
                     f"is not a whole number of {self.options['resolution']} intervals")
        local = starts.dt.tz_convert(self.options["tz"]).dt.tz_localize(None)
        into_day = (local - local.dt.normalize()).to_numpy()
        self._refuse(frame, into_day % np.timedelta64(self.seconds, "s") != np.timedelta64(0, "s"),
                     f"does not start on a {self.options['resolution']} boundary of {self.options['tz']} local "
                     f"time (a wrong offset, or intervals shorter than the resolution)")
        counts = (seconds // self.seconds).astype(np.int64)
        limit = self.options.get("max_intervals", 100_000)
        self._refuse(frame, counts > limit, f"would give more than max_intervals ({limit}) intervals; "
                                            f"raise max_intervals if that is meant")
        return starts, counts

    def _refuse(self, frame: pd.DataFrame, bad: np.ndarray, reason: str) -> None:
        rows = [int(p) for p in np.flatnonzero(bad)]
        if rows:
            start, end = self.options["start"], self.options["end"]
            first = frame.iloc[rows[0]]
            raise StepError(f"{self.type_name}: the delivery period of {row_names(frame, rows)} {reason}; "
                            f"first: {first[start]} to {first[end]}")

    def _divide(self, frame: pd.DataFrame, column: str, counts: np.ndarray) -> pd.Series:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values.dtype):
            raise StepError(f"{self.type_name}: column {column!r} holds booleans, not quantities")
        if pd.api.types.is_numeric_dtype(values.dtype):
            return pd.Series(np.repeat(values.to_numpy(dtype="float64") / counts, counts))
        parts = [part for position, (value, count) in enumerate(zip(values, counts))
                 for part in self._parts(frame, column, position, value, int(count))]
        return pd.Series(parts, dtype=object)

    def _parts(self, frame: pd.DataFrame, column: str, position: int, value: Any, count: int) -> list[Any]:
        if is_missing(value):
            return [None] * count
        if isinstance(value, decimal.Decimal) and value.is_finite():
            return self._decimal_parts(frame, column, position, value, count)
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            return [float(value) / count] * count
        raise StepError(f"{self.type_name}: column {column!r} holds {value!r} in {row_names(frame, [position])}, "
                        f"not a quantity")

    def _decimal_parts(self, frame: pd.DataFrame, column: str, position: int, total: decimal.Decimal,
                       count: int) -> list[decimal.Decimal]:
        scale = self.options.get("scale")
        where = f"{self.type_name}: {total} in column {column!r} of {row_names(frame, [position])}"
        if scale is None:
            try:
                return [decimal_of(Fraction(total) / count, None, like=total)] * count
            except Inexact as exc:
                raise StepError(f"{where} over {count} intervals gives {exc}, which has no exact decimal form; "
                                f"set `scale` to split it into parts of that many decimal places") from None
        units = Fraction(total) * 10 ** scale
        if units.denominator != 1:
            raise StepError(f"{where} has more than {scale} decimal places (scale); raise scale")
        whole, rest = divmod(abs(units.numerator), count)
        sign = -1 if units < 0 else 1
        return [decimal.Decimal(f"{sign * (whole + (1 if number < rest else 0))}E-{scale}") for number in range(count)]
