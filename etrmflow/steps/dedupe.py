"""``dedupe``: one row per key across the whole run, the latest version or the first."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from etrmflow.engine.staging_codec import dumps_tagged
from etrmflow.steps.common import COLUMNS, StepError, options_object, require_columns
from etrmflow.steps.dataset import CHUNK_ROWS, DatasetStep
from etrmflow.steps.values import group_codes, is_missing, offset_text, utc_instants

_POSITION = "__etrmflow_position"
_GROUP = "__etrmflow_group"
_RANK = "__etrmflow_rank_"


class Dedupe(DatasetStep):
    """Keep one row per key over every page of the run: the latest version, or the first.

    Within a key, rows are ranked by ``order_by`` (ascending, empty values first, so any value
    beats none); ``keep: latest`` keeps the last of them, ``keep: first`` the first. Without
    ``order_by`` the arrival order ranks them (page by page, row by row). Date-time text with
    UTC offsets (an ``updated_at`` as sent) ranks by the instant it names, not as text; a time
    without an offset among such values fails the step. Rows equal on every
    ``order_by`` column are a tie: the arrival order decides it (``latest`` keeps the later
    row, ``first`` the earlier), unless ``on_tie: fail``, which fails the run when the tied
    rows differ in any column. Rows with an empty key column cannot be told apart and are all
    kept. Key values are one key when equal in value: the numbers 1, 1.0 and Decimal 1.00 are
    one key, but a boolean is never a number (true and 1 are two records) and text never
    equals a number (``"1"`` and 1 are two records). A whole-dataset step: see pipelines.md.

    Example::

        - {type: dedupe, key: [trade_id], order_by: [version, updated_at], keep: latest}
    """

    type_name: ClassVar[str] = "dedupe"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "key": {**COLUMNS, "description": "Columns that identify a record (e.g. [trade_id])."},
        "order_by": {**COLUMNS, "description": "Columns that rank a key's rows, e.g. [version, updated_at]; "
                                               "default: the arrival order."},
        "keep": {"enum": ["latest", "first"], "default": "latest",
                 "description": "latest: the highest-ranked row of each key; first: the lowest."},
        "on_tie": {"enum": ["arrival", "fail"], "default": "arrival",
                   "description": "Rows equal on every order_by column: arrival lets the arrival order "
                                  "decide; fail fails the run if the tied rows differ."},
        "chunk_rows": CHUNK_ROWS,
    }, ["key"])

    def __init__(self, options: Any, *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.key = list(options["key"])
        self.order_by = list(options.get("order_by") or [])
        self.latest = options.get("keep", "latest") == "latest"
        self.fail_on_tie = options.get("on_tie", "arrival") == "fail"
        clash = sorted(set(self.key) & set(self.order_by))
        if clash:
            raise StepError(f"dedupe: {', '.join(clash)} cannot be both in key and in order_by")

    def group_key(self) -> list[str]:
        return self.key

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        require_columns(frame, self.key + self.order_by, "dedupe")
        ranked = self._ranked(frame)
        keyless = ranked[self.key].isna().any(axis=1)  # cannot be told apart: every such row stays
        kept = ~ranked.duplicated(subset=[_GROUP], keep="last" if self.latest else "first") | keyless
        self._check_ties(ranked, kept & ~keyless)
        self.count("rows_without_key", int(keyless.sum()))
        out = ranked[kept].sort_values(_GROUP, kind="stable").drop(columns=[_GROUP, _POSITION, *self._ranks])
        self.count("rows_in", len(frame))
        self.count("rows_out", len(out))
        self.count("duplicates_dropped", len(frame) - len(out))
        return out.reset_index(drop=True)

    @property
    def _ranks(self) -> list[str]:
        return [f"{_RANK}{number}" for number in range(len(self.order_by))]

    def _ranked(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows sorted by key group (in the order the chunk has them), rank, then arrival."""
        ranked = frame.reset_index(drop=True)
        groups, _ = group_codes(ranked, self.key)
        ranks = {name: _rank_values(ranked[column]) for name, column in zip(self._ranks, self.order_by)}
        ranked = ranked.assign(**{_GROUP: groups, _POSITION: np.arange(len(ranked))}, **ranks)
        return ranked.sort_values([_GROUP, *self._ranks, _POSITION], na_position="first", kind="stable")

    def _check_ties(self, ranked: pd.DataFrame, kept: pd.Series) -> None:
        """Count the keys whose kept row ties with another on order_by (and fail if asked)."""
        if not self.order_by:
            return
        rank = [_GROUP, *self._ranks]
        winners = ranked.loc[kept & ranked.duplicated(subset=rank, keep=False), rank]
        if winners.empty:
            return
        rivals = ranked.merge(winners, on=rank)  # every row tied with a kept one (merge matches NaN)
        conflicts = 0
        for _, rows in rivals.groupby(_GROUP, sort=False):
            values = rows.drop(columns=[_GROUP, _POSITION, *self._ranks])
            if len({dumps_tagged(row) for row in values.to_dict("records")}) > 1:
                conflicts += 1
                if self.fail_on_tie:
                    key = ", ".join(f"{c}={values.iloc[0][c]!r}" for c in self.key)
                    raise StepError(f"dedupe: {len(rows)} different rows of key {key} tie on "
                                    f"{', '.join(self.order_by)}, and on_tie is fail")
        self.count("ties", len(winners))
        self.count("conflicting_ties", conflicts)


def _rank_values(values: pd.Series) -> pd.Series:
    """What an order_by column ranks by: its values, or for date-time text with UTC offsets
    (an updated_at as sent) the instants, since text order is not time order across offsets
    (``02:30+02:00`` is before ``02:10+01:00``) nor with fractions (``28.5Z`` sorts before ``28Z``)."""
    _check_rankable(values)
    if not offset_text(values):
        return values
    return utc_instants(values, where=f"dedupe: order_by column {values.name!r}")


def _check_rankable(values: pd.Series) -> None:
    """Python objects of kinds that do not compare (a version sent as 10 on one page and "9" on
    another) would be ranked arbitrarily, and the wrong row kept."""
    if values.dtype != object:
        return
    kinds = {_kind(value) for value in values.tolist() if not is_missing(value)}
    if len(kinds) > 1:
        raise StepError(f"dedupe: order_by column {values.name} holds {' and '.join(sorted(kinds))}, which do "
                        f"not rank against each other; cast the column to one type before the step")


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "booleans"
    if isinstance(value, (int, float, decimal.Decimal, np.number)):
        return "numbers"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dt.datetime):  # pd.Timestamp too
        return "times"
    return type(value).__name__
