"""Declared decimals turned into ``Decimal`` in valid records (after validation, before
transforms); see ``etrmflow.validation.decimals`` for the keyword."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from etrmflow.validation.decimals import (
    FLOAT_DIGITS,
    KEYWORD,
    MAX_PRECISION,
    DecimalSpec,
    parse_spec,
    to_decimal,
)
from etrmflow.validation.located import EACH, UnreachableFormat, locate

_CONTEXT = Context(prec=MAX_PRECISION, traps=[Inexact, InvalidOperation])  # scaling k is exact
_ABSENT = object()
_REMEMBERED = 8_192
"""Distinct values remembered per declared field (prices repeat; the rest costs a conversion)."""
_EXACT_UNITS = 22
"""The largest scale whose ``10**scale`` is a float exactly: above it, ``k / 10**scale`` in
floats is not the float nearest the decimal, and the shortcut could round a vendor's digits."""


class _Converter:
    """``to_decimal`` for one spec, remembered by exact type and value.

    The Decimal depends on the number alone, but for the sign of a zero (-0.0 gives
    Decimal('-0.00')): zeros and values that are not finite are converted every time. A float
    that ``plain_float`` accepts (what validated money is) is the double nearest ``k / 10**scale``
    for the integer ``k = round(value * 10**scale)``, so its Decimal is ``k`` scaled, without
    going through its text (for a scale up to 22, where ``10**scale`` is an exact float).
    """

    __slots__ = ("floats", "known", "limit", "scale", "spec", "unit")

    def __init__(self, spec: DecimalSpec) -> None:
        self.spec = spec
        self.scale = spec.scale
        self.unit = float(10 ** spec.scale)
        self.limit = float(10 ** (min(FLOAT_DIGITS, spec.precision) - spec.scale))
        self.floats: dict[float, Decimal] = {}
        self.known: dict[type, dict[Any, Any]] = {float: self.floats, int: {}, Decimal: {}}

    def __call__(self, value: Any) -> Any:
        kind = type(value)
        known = self.known.get(kind)
        if known is None or (kind is Decimal and not value.is_finite()):  # sNaN cannot be hashed
            return to_decimal(value, self.spec)
        converted = known.get(value)
        if converted is None:
            converted = self._plain(value) if kind is float else None
            if converted is None:
                converted = to_decimal(value, self.spec)
            if value:
                if len(known) >= _REMEMBERED:
                    known.clear()
                known[value] = converted
        return converted

    def _plain(self, value: float) -> Decimal | None:
        if self.scale > _EXACT_UNITS or not -self.limit < value < self.limit:  # NaN and inf too
            return None
        units = round(value * self.unit)
        if not units or units / self.unit != value:
            return None
        return Decimal(units).scaleb(-self.scale, _CONTEXT)


class DecimalFields:
    """Turns a contract's declared decimals into ``Decimal`` in records that passed validation.

    Declarations are found at plain paths (properties, array items, local ``$ref``); records are
    copied along the way, never changed in place (dead letters and checkpoints keep what the
    vendor sent). Top-level fields, the usual place of money, cost one copy of the record for
    all of them.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        try:
            located = locate(schema)
        except UnreachableFormat:  # such a schema is validated whole by jsonschema; see docs
            located = []
        self.paths = tuple((item.path, parse_spec(item.value)) for item in located if item.keyword == KEYWORD)
        self._top = tuple((path[0], _Converter(spec)) for path, spec in self.paths
                          if len(path) == 1 and path[0] != EACH)
        self._nested = tuple((path, _Converter(spec)) for path, spec in self.paths
                             if not (len(path) == 1 and path[0] != EACH))

    def convert(self, records: list[Any]) -> list[Any]:
        if not self.paths:
            return records
        out = [self._top_level(record) for record in records] if self._top else records
        for path, convert in self._nested:
            out = [self._at(record, path, convert) for record in out]
        return out

    def _top_level(self, record: Any) -> Any:
        if not isinstance(record, dict):
            return record
        copy = None
        for name, convert in self._top:
            value = record.get(name, _ABSENT)
            if value is _ABSENT:
                continue
            if copy is None:
                copy = dict(record)
            # Remembered floats looked up here: the usual case, without the call.
            converted = convert.floats.get(value) if type(value) is float else None
            copy[name] = convert(value) if converted is None else converted
        return record if copy is None else copy

    def _at(self, value: Any, path: tuple[str, ...], convert: _Converter) -> Any:
        if not path:
            return convert(value)
        head, rest = path[0], path[1:]
        if head == EACH:
            return [self._at(item, rest, convert) for item in value] if isinstance(value, list) else value
        if isinstance(value, dict) and head in value:
            return {**value, head: self._at(value[head], rest, convert)}
        return value
