"""The typed columns rule vectors read: one batch of object records, column by column.

For each (field, kind) a column holds numpy values and an ``ok`` mask of the records whose
value has exactly the type the kind assumes; on the others the vector form is not exact.

* ``num``: a float (not an int: int arithmetic is exact in Python, not in float64);
* ``str``: a str;
* ``instant``: a str that parses as a date-time with an offset (microseconds since the epoch:
  aware datetimes compare as these integers do);
* ``sum:<attr>``: a list of dicts that all have a float ``attr``, summed left to right from
  0 as the expression language's ``sum`` does (an item without it makes the record the
  reference's: the projection would skip it).
"""

from __future__ import annotations

import operator
from itertools import repeat
from typing import Any

import numpy as np

from etrmflow.validation.instants import NOT_AN_INSTANT, Instants

Kind = str
NUM: Kind = "num"
_NAN = float("nan")
_MAX_ITEMS = 64
_FEW_LISTS = 48
"""Fewer lists, or longer ones, are summed record by record (numpy's set-up would cost more)."""


class Batch:
    """Columns of ``records`` (all dicts), built on first use."""

    def __init__(self, records: list[dict[str, Any]], instants: Instants) -> None:
        self.size = len(records)
        self._records = records
        self._instants = instants
        self._raw: dict[str, list[Any]] = {}
        self._typed: dict[tuple[str, Kind], tuple[np.ndarray, np.ndarray]] = {}
        self._present: dict[str, np.ndarray] = {}
        self._ok: dict[frozenset[tuple[str, Kind]], np.ndarray] = {}

    def raw(self, name: str) -> list[Any]:
        values = self._raw.get(name)
        if values is None:
            values = self._raw[name] = list(map(dict.get, self._records, repeat(name)))
        return values

    def present(self, name: str) -> np.ndarray:
        """Neither absent nor null (``present()`` of the expression language)."""
        present = self._present.get(name)
        if present is None:
            typed = next((ok for (field, _), (ok, _) in self._typed.items() if field == name), None)
            if typed is None:
                present = np.fromiter(map(operator.is_not, self.raw(name), repeat(None)), bool, self.size)
            elif typed.all():  # a typed value is present
                present = typed
            else:  # look only at the others
                present, raw = typed.copy(), self.raw(name)
                others = np.flatnonzero(~typed).tolist()
                present[others] = [raw[k] is not None for k in others]
            self._present[name] = present
        return present

    def unparsed(self, name: str) -> np.ndarray:
        """Strings that are no date-time etrmflow accepts (which rules reading them skip)."""
        ok, raw = self._column(name, "instant")[0], self.raw(name)
        mask = np.zeros(self.size, dtype=bool)
        if ok.all():
            return mask
        mask[[k for k in np.flatnonzero(~ok).tolist() if type(raw[k]) is str]] = True  # a subclass: reference
        return mask

    def values(self, name: str, kind: Kind) -> np.ndarray:
        return self._column(name, kind)[1]

    def all_ok(self, needs: frozenset[tuple[str, Kind]]) -> np.ndarray:
        """The records on which every (field, kind) of ``needs`` has its type (do not modify)."""
        ok = self._ok.get(needs)
        if ok is None:
            masks = [self._column(name, kind)[0] for name, kind in needs]
            ok = self._ok[needs] = np.logical_and.reduce(masks) if masks else np.ones(self.size, dtype=bool)
        return ok

    def _column(self, name: str, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
        column = self._typed.get((name, kind))
        if column is None:
            column = self._typed[(name, kind)] = self._build(name, kind)
        return column

    def _build(self, name: str, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
        raw = self.raw(name)
        if kind == NUM:
            return _numbers(raw)
        if kind == "str":
            ok = [type(v) is str for v in raw]
            return np.array(ok, dtype=bool), np.array([v if s else "" for v, s in zip(raw, ok)], dtype=object)
        if kind == "instant":
            instants = self._instants.parse(raw)
            return instants != NOT_AN_INSTANT, instants
        return _sums(raw, kind.split(":", 1)[1], self.present(name))


def _numbers(raw: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Floats, NaN marking the others (a NaN float too: the reference judges it)."""
    types = set(map(type, raw))
    if types <= {float, type(None)}:
        numbers = np.array(raw, dtype=np.float64)  # None becomes NaN
    else:
        numbers = np.array([v if type(v) is float else _NAN for v in raw], dtype=np.float64)
    return ~np.isnan(numbers), numbers


def _sums(raw: list[Any], attr: str, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sum(field.attr)`` of each record whose field is a list of dicts, each with a float
    ``attr``: added position by position, so each record's sum runs left to right from 0 as
    the expression language's does (padding adds +0.0, which leaves a sum begun at int 0 as it
    is: such a sum is never -0.0)."""
    size = len(raw)
    hits = [k for k in np.flatnonzero(present).tolist() if type(raw[k]) is list]
    lengths = [len(raw[k]) for k in hits]
    if len(hits) < _FEW_LISTS or max(lengths) > _MAX_ITEMS:
        return _per_record_sums(raw, attr, hits)
    items = [item for k in hits for item in raw[k]]
    if set(map(type, items)) == {dict}:
        values = list(map(dict.get, items, repeat(attr)))
    else:
        values = [item.get(attr) if type(item) is dict else None for item in items]
    ok_items, numbers = _numbers(values)
    counts = np.array(lengths, dtype=np.intp)
    owners = np.repeat(np.arange(len(hits)), counts)
    positions = np.arange(len(items)) - np.repeat(np.cumsum(counts) - counts, counts)
    grid = np.zeros((len(hits), max(lengths, default=0)), dtype=np.float64)
    grid[owners, positions] = numbers
    total = np.zeros(len(hits), dtype=np.float64)
    for column in grid.T:
        total = total + column
    ok_hits = np.ones(len(hits), dtype=bool)
    ok_hits[owners[~ok_items]] = False  # an item that is no dict, lacks attr or is no float
    ok, sums = np.zeros(size, dtype=bool), np.zeros(size, dtype=np.float64)
    ok[hits], sums[hits] = ok_hits, total
    return ok, sums


def _per_record_sums(raw: list[Any], attr: str, hits: list[int]) -> tuple[np.ndarray, np.ndarray]:
    sums: list[float | None] = [None] * len(raw)
    for k in hits:
        sums[k] = _float_sum(raw[k], attr)
    return np.array([v is not None for v in sums], dtype=bool), np.array(
        [0.0 if v is None else v for v in sums], dtype=np.float64)


def _float_sum(value: list[Any], attr: str) -> float | None:
    """``sum(value.attr)`` when every item is a dict with a float ``attr``; None otherwise."""
    total: Any = 0
    for item in value:
        number = item.get(attr) if type(item) is dict else None
        if type(number) is not float:
            return None
        total = total + number
    return float(total)
