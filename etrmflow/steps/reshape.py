"""Reshaping steps: one row per element of a nested list (``explode_legs``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from etrmflow.components import Transform
from etrmflow.steps.common import StepError, options_object
from etrmflow.steps.values import is_missing, repeat_rows, row_names

_NAME = {"type": "string", "minLength": 1}
_EXACT_IN_FLOAT = 2**53
INDEX_BASE = {"enum": [0, 1], "description": "Number of the first element: 0 (default, as in JSON "
                                             "pointers like /legs/0) or 1."}


class ExplodeLegs(Transform):
    """One row per leg: a column holding a list of objects (a shaped trade's legs) becomes one row
    per element, the element's fields become columns, the parent's fields are repeated.

    The list column is dropped and an index column numbers the legs of each parent row (from 0
    by default, like the JSON pointer ``/legs/0`` in dead letters). A leg field named like a
    parent column is an error unless ``prefix`` sets them apart. A row whose list is empty or
    missing fails the step unless ``empty: keep`` keeps it (once, with empty leg columns), so a
    trade is never lost. A batch in which no record has the list (an optional field) has no such
    column: its rows count as having no legs. Make the leg number part of a sink's key (``key:
    [trade_id, version, leg_index]``): the legs of one trade share its primary key.

    Example::

        - {type: explode_legs, column: legs, prefix: leg_, empty: keep}
    """

    type_name: ClassVar[str] = "explode_legs"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "column": {**_NAME, "description": "The column holding the list of leg objects; dropped from the output."},
        "prefix": {"type": "string", "description": "Put before every leg field's name, e.g. leg_ "
                                                    "(default: none)."},
        "index_column": {**_NAME, "description": "The column numbering the legs of each row (default leg_index)."},
        "index_base": INDEX_BASE,
        "empty": {"enum": ["error", "keep"],
                  "description": "A row whose list is empty or missing: error (default) fails the step; "
                                 "keep keeps the row once, its leg columns and index empty."},
    }, ["column"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.column: str = options["column"]
        self.prefix: str = options.get("prefix", "")
        self.index_column: str = options.get("index_column", "leg_index")
        self.base: int = options.get("index_base", 0)
        self.keep_empty = options.get("empty", "error") == "keep"

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        # An optional field no record of the page has is no column at all: every row has no legs.
        values = frame[self.column] if self.column in frame.columns else [None] * len(frame)
        lists = [self._legs(frame, position, value) for position, value in enumerate(values)]
        self._check_empty(frame, lists)
        slots = [legs or [None] for legs in lists] if self.keep_empty else lists  # None: a kept empty row
        dropped = [self.column] if self.column in frame.columns else []
        out = repeat_rows(frame, np.array([len(legs) for legs in slots], dtype=np.int64), without=dropped)
        fields = self._fields(lists, list(out.columns))
        rows = [leg for legs in slots for leg in legs]
        index = [None if leg is None else number + self.base for legs in slots for number, leg in enumerate(legs)]
        out[self.index_column] = pd.array(index, dtype="Int64")
        for field in fields:
            out[self.prefix + str(field)] = _leg_column([_get(leg, field) for leg in rows], out.index)
        return out

    def _legs(self, frame: pd.DataFrame, position: int, value: Any) -> list[Mapping[str, Any]]:
        if isinstance(value, (list, tuple, np.ndarray)):
            legs = list(value)
        elif is_missing(value):
            legs = []
        else:
            raise StepError(f"{self.type_name}: {row_names(frame, [position])} holds "
                            f"{type(value).__name__} {value!s:.60} in column {self.column!r}, not a list of legs")
        for number, leg in enumerate(legs):
            if not isinstance(leg, Mapping):
                raise StepError(f"{self.type_name}: element {number} of {self.column!r} in "
                                f"{row_names(frame, [position])} is {type(leg).__name__} {leg!s:.60}, not an object")
        return legs

    def _check_empty(self, frame: pd.DataFrame, lists: list[list[Mapping[str, Any]]]) -> None:
        empty = [position for position, legs in enumerate(lists) if not legs]
        if empty and not self.keep_empty:
            absent = "" if self.column in frame.columns else " (no record of the batch has it)"
            raise StepError(f"{self.type_name}: {row_names(frame, empty)} ha{'s' if len(empty) == 1 else 've'} "
                            f"no legs in column {self.column!r}{absent} (empty or missing); set `empty: keep` to "
                            f"keep such rows once, with empty leg columns")

    def _fields(self, lists: list[list[Mapping[str, Any]]], parent: list[str]) -> list[Any]:
        fields: dict[Any, None] = {}  # every leg field, in order of first appearance
        for legs in lists:
            for leg in legs:
                fields.update(dict.fromkeys(leg))
        if self.index_column in parent:
            raise StepError(f"{self.type_name}: the index column {self.index_column!r} is already a column; "
                            f"name another with `index_column`")
        names = [self.prefix + str(field) for field in fields]
        taken = set(parent) | {self.index_column}
        clashes = [name for name in names if name in taken]
        if clashes:
            raise StepError(f"{self.type_name}: leg field(s) {', '.join(clashes)} would overwrite the column(s) "
                            f"of the same name; set `prefix` (e.g. prefix: leg_) or rename the columns first")
        return list(fields)


def _get(leg: Mapping[str, Any] | None, field: Any) -> Any:
    return None if leg is None else leg.get(field)


def _leg_column(values: list[Any], index: pd.Index) -> pd.Series:
    """A leg field's values as a column. Integers with gaps (a field some legs lack) would be
    floats, which round beyond 2**53 (9007199254740993 to ...992): they become nullable Int64,
    or Python ints where int64 cannot hold them either."""
    column = pd.Series(values, index=index)
    if column.dtype != "float64":
        return column
    present = [value for value in values if not is_missing(value)]
    if not any(type(value) is int and abs(value) > _EXACT_IN_FLOAT for value in present):
        return column
    if all(type(value) is int and -2**63 <= value < 2**63 for value in present):
        return pd.Series(pd.array(values, dtype="Int64"), index=index)
    return pd.Series(values, index=index, dtype=object)
