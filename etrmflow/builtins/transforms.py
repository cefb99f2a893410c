"""Built-in transform steps: pandas, batch by batch, declared in YAML.

Each step is a class with its YAML ``type``, an options schema and an example. Expressions
(``derive``, ``filter``) use etrmflow's safe expression language, never Python ``eval``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd

from etrmflow import hookimpl
from etrmflow.components import Transform
from etrmflow.steps.common import COLUMNS as _COLUMNS
from etrmflow.steps.common import StepError
from etrmflow.steps.common import options_object as _object
from etrmflow.steps.common import require_columns as _require
from etrmflow.steps.values import utc_instants as _utc_instants


def _column_expression(text: str) -> Any:
    """A compiled expression that can run on whole columns (fails now, not mid-run, if not)."""
    from etrmflow.expr import compile_expression

    expression = compile_expression(text)
    expression.check_frame_support()
    return expression


class Rename(Transform):
    """Rename columns. A name that is not a column is ignored; a rename that would leave two
    columns of one name (onto a column that stays, or two columns of a page onto one name)
    fails the step.

    Example::

        - {type: rename, columns: {counterparty_lei: cpty_lei}}
    """

    type_name: ClassVar[str] = "rename"
    options_schema: ClassVar[dict[str, Any]] = _object(
        {"columns": {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1}}, ["columns"])

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        names = dict(self.options["columns"])
        _refuse_merged_names(names, list(frame.columns))
        return frame.rename(columns=names)

    def output_columns(self, properties: dict[str, Any], key: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Declarations and key follow the new names (a renamed money column stays exact)."""
        names = dict(self.options["columns"])
        return {names.get(name, name): spec for name, spec in properties.items()}, tuple(names.get(k, k) for k in key)


def _refuse_merged_names(names: dict[str, str], columns: list[Any]) -> None:
    """Two columns under one name are a value the sinks cannot place: refuse the rename."""
    sources: dict[Any, list[Any]] = {}
    for column in columns:
        sources.setdefault(names.get(column, column), []).append(column)
    for target, found in sources.items():
        renamed = [column for column in found if column in names]
        if len(found) < 2 or not renamed:
            continue
        if len(renamed) < len(found):
            raise StepError(f"rename: {' and '.join(map(str, renamed))} would become {target}, which is already "
                            f"a column; drop or rename {target} first")
        raise StepError(f"rename: {' and '.join(map(str, renamed))} would both become {target}; "
                        f"a page may have only one of them")


class Select(Transform):
    """Keep only these columns, in this order.

    Example::

        - {type: select, columns: [trade_id, version, price]}
    """

    type_name: ClassVar[str] = "select"
    options_schema: ClassVar[dict[str, Any]] = _object({"columns": _COLUMNS}, ["columns"])

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns = list(self.options["columns"])
        _require(frame, columns, "select")
        return frame[columns]

    def output_columns(self, properties: dict[str, Any], key: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Only the selected columns' declarations, in the selected order."""
        return {name: properties[name] for name in self.options["columns"] if name in properties}, key


class Drop(Transform):
    """Drop columns (a column that is absent is ignored).

    Example::

        - {type: drop, columns: [legs]}
    """

    type_name: ClassVar[str] = "drop"
    options_schema: ClassVar[dict[str, Any]] = _object({"columns": _COLUMNS}, ["columns"])

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns=[c for c in self.options["columns"] if c in frame.columns])

    def output_columns(self, properties: dict[str, Any], key: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The dropped columns' declarations go too: the sinks make no empty columns for them."""
        return {name: spec for name, spec in properties.items() if name not in self.options["columns"]}, key


_CASTS = {"string": "string", "integer": "Int64", "float": "float64", "boolean": "boolean",
          "category": "category", "float32": "float32"}


class Cast(Transform):
    """Cast columns to explicit types: string, integer, float, boolean, category, float32.

    ``float32`` is for volumes and analytics copies only, never for money.

    Example::

        - {type: cast, columns: {product_code: category, version: integer}}
    """

    type_name: ClassVar[str] = "cast"
    options_schema: ClassVar[dict[str, Any]] = _object(
        {"columns": {"type": "object", "minProperties": 1, "additionalProperties": {"enum": sorted(_CASTS)}}},
        ["columns"])

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns = dict(self.options["columns"])
        _require(frame, list(columns), "cast")
        return frame.astype({column: _CASTS[kind] for column, kind in columns.items()})


class ParseTimestamps(Transform):
    """Parse ISO 8601 strings into timezone-aware timestamps (UTC instants).

    Values must carry an offset (or Z) unless ``assume_tz`` names the zone of naive local
    times; then the repeated autumn hour is ambiguous and fails unless ``ambiguous`` says how.
    Without ``assume_tz`` a time without an offset, or a date alone, fails the step: read as
    UTC it would be an hour or two off in Europe.

    Example::

        - {type: parse_timestamps, columns: [delivery_start, delivery_end]}
    """

    type_name: ClassVar[str] = "parse_timestamps"
    options_schema: ClassVar[dict[str, Any]] = _object({
        "columns": _COLUMNS,
        "assume_tz": {"type": "string", "format": "timezone", "description": "IANA zone of values without an offset."},
        "ambiguous": {"enum": ["raise", "earliest", "latest"],
                      "description": "The repeated hour at the autumn change, for naive values (default raise)."},
    }, ["columns"])

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns = list(self.options["columns"])
        _require(frame, columns, "parse_timestamps")
        frame = frame.copy()
        for column in columns:
            frame[column] = self._parse(frame[column])
        return frame

    def _parse(self, values: pd.Series) -> pd.Series:
        zone = self.options.get("assume_tz")
        if zone is None:  # a time without an offset is refused, never taken for UTC
            return _utc_instants(values, where=f"parse_timestamps: column {values.name!r}")
        naive = pd.to_datetime(values, format="ISO8601")
        ambiguous = {"raise": "raise", "earliest": True, "latest": False}[self.options.get("ambiguous", "raise")]
        return naive.dt.tz_localize(zone, ambiguous=ambiguous, nonexistent="raise").dt.tz_convert("UTC")


class ToLocalTime(Transform):
    """Convert timezone-aware timestamps, or ISO 8601 text with an offset, to a market's local
    time (the same instants). A time without an offset fails the step rather than be taken for UTC.

    Example::

        - {type: to_local_time, columns: [delivery_start], tz: Europe/Berlin}
    """

    type_name: ClassVar[str] = "to_local_time"
    options_schema: ClassVar[dict[str, Any]] = _object(
        {"columns": _COLUMNS, "tz": {"type": "string", "format": "timezone", "description": "IANA zone, e.g. Europe/Berlin."}},
        ["columns", "tz"])

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns = list(self.options["columns"])
        _require(frame, columns, "to_local_time")
        frame = frame.copy()
        for column in columns:  # a time without an offset is refused, never taken for UTC
            values = _utc_instants(frame[column], where=f"to_local_time: column {column!r}")
            frame[column] = values.dt.tz_convert(self.options["tz"])
        return frame


class Derive(Transform):
    """Add or replace columns computed from safe expressions over the row.

    Example::

        - type: derive
          columns:
            notional_check: price * volume_mwh
            is_buy: buy_sell == 'B'
    """

    type_name: ClassVar[str] = "derive"
    options_schema: ClassVar[dict[str, Any]] = _object(
        {"columns": {"type": "object", "minProperties": 1,
                     "additionalProperties": {"type": "string", "format": "expression"}}}, ["columns"])

    def __init__(self, options: Any, *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.expressions = {name: _column_expression(text) for name, text in options["columns"].items()}

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        for name, expression in self.expressions.items():
            frame[name] = expression.evaluate_frame(frame)
        return frame


class Filter(Transform):
    """Keep the rows where a safe expression is true.

    Filtered rows are valid records the pipeline chose not to load; they are counted, not lost.

    Example::

        - {type: filter, where: "commodity == 'EL' and volume_mwh > 0"}
    """

    type_name: ClassVar[str] = "filter"
    options_schema: ClassVar[dict[str, Any]] = _object({"where": {"type": "string", "format": "expression"}},
                                                       ["where"])

    def __init__(self, options: Any, *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.expression = _column_expression(options["where"])

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        mask = self.expression.evaluate_frame(frame)
        if not isinstance(mask, pd.Series):
            return frame if mask else frame.iloc[0:0]
        return frame[mask.fillna(False).astype(bool)]


@hookimpl
def etrmflow_transform_types() -> list[type[Transform]]:
    return [Rename, Select, Drop, Cast, ParseTimestamps, ToLocalTime, Derive, Filter]
