"""Value-level keywords checked a column at a time: ``format``, ``pattern``, ``x-etrmflow-decimal``.

Each check answers "which of these values fail?" with the same test jsonschema applies, but
judges each distinct string once per batch (formats also across batches, memoised). Decimals
are first tested in numpy: ``rint(x * 10**scale) / 10**scale == x`` holds only for floats
whose shortest repr has at most ``scale`` decimals (``x`` is then the float nearest
``k / 10**scale``); every other value gets the exact Decimal test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jsonschema
import numpy as np

from etrmflow.validation.columns import Column
from etrmflow.validation.decimals import (
    EXACT_FLOAT_SCALE,
    FLOAT_DIGITS,
    DecimalSpec,
    decimal_problem,
    is_number,
)

_FLOAT_OR_NONE = frozenset({float, type(None)})
_SMALL = 32
_MEMO_LIMIT = 100_000
"""Remembered verdicts per check: a cache, cleared when full."""


def _strings(column: Column) -> set[str]:
    try:
        distinct = column.distinct()
    except TypeError:  # a list or dict where a string was expected: ``type`` reports it
        return {v for v in column.values() if isinstance(v, str)}
    distinct.discard(None)  # an absent field, mostly
    if set(map(type, distinct)) <= {str}:
        return distinct
    return {v for v in distinct if isinstance(v, str)}


def _positions(column: Column, bad: set[str]) -> list[int]:
    values = column.values()
    try:
        return np.flatnonzero(np.fromiter(map(bad.__contains__, values), bool, len(values))).tolist()
    except TypeError:  # an unhashable value (a list where a string was expected)
        return [k for k, v in enumerate(values) if isinstance(v, str) and v in bad]


class FormatCheck:
    """``format: <name>``, judged by the same ``jsonschema.FormatChecker`` as the reference.

    Verdicts are memoised per distinct string: identifiers and delivery periods repeat across
    batches.
    """

    def __init__(self, name: str, format_checker: jsonschema.FormatChecker) -> None:
        self.name = name
        self._format_checker = format_checker
        self._good: set[str] = set()
        self._bad: set[str] = set()

    def failing(self, column: Column) -> list[int]:
        distinct = _strings(column)
        new = distinct - self._good
        if not new:
            return []
        bad = new & self._bad
        new -= bad
        fresh = {value for value in new if not self._format_checker.conforms(value, self.name)}
        self._remember(self._good, new - fresh)
        self._remember(self._bad, fresh)
        bad |= fresh
        return _positions(column, bad) if bad else []

    @staticmethod
    def _remember(memo: set[str], values: set[str]) -> None:
        if not values:
            return
        if len(memo) + len(values) > _MEMO_LIMIT:
            memo.clear()  # bounded memory: a cache, not a ledger
        memo |= values


class PatternCheck:
    """``pattern``: ``re.search`` as jsonschema does it (not the Rust regex dialect)."""

    def __init__(self, pattern: str) -> None:
        self._search: Callable[[str], Any] = re.compile(pattern).search

    def failing(self, column: Column) -> list[int]:
        search = self._search
        bad = {value for value in _strings(column) if not search(value)}
        return _positions(column, bad) if bad else []


class DecimalCheck:
    """``x-etrmflow-decimal``: numpy accepts the plain floats, Decimal judges the rest."""

    def __init__(self, spec: DecimalSpec) -> None:
        self._spec = spec
        self._unit = float(10 ** spec.scale)
        # decimals.plain_float, vectorised
        self._limit = float(10 ** (min(FLOAT_DIGITS, spec.precision) - spec.scale))

    def failing(self, column: Column) -> list[int]:
        values = column.values()
        # numpy costs more than it saves on a few values, and cannot judge scales whose unit is
        # not an exact double
        if len(values) < _SMALL or self._spec.scale > EXACT_FLOAT_SCALE:
            return [k for k, v in enumerate(values) if decimal_problem(v, self._spec)]
        if set(map(type, values)) <= _FLOAT_OR_NONE:  # None (absent) becomes NaN: not plain
            doubtful = self._not_plain(values)
        else:
            floats = [k for k, v in enumerate(values) if type(v) is float]
            doubtful = [floats[j] for j in self._not_plain([values[k] for k in floats])]
            doubtful += [k for k, v in enumerate(values) if type(v) is not float and is_number(v)]
        return sorted(k for k in doubtful if decimal_problem(values[k], self._spec))

    def _not_plain(self, floats: list[float]) -> list[int]:
        if not floats:
            return []
        array = np.array(floats, dtype=np.float64)
        with np.errstate(all="ignore"):
            plain = (np.rint(array * self._unit) / self._unit == array) & (np.abs(array) < self._limit)
        return np.flatnonzero(~plain).tolist()
