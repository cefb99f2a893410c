"""Built-in plugin: validators that check records against reference data and market curves.

``reference_data`` checks that a field holds a known value (a counterparty, a delivery point,
a product); ``curve_snapshot`` checks that a price is plausible against a forward-curve
snapshot. Both load their data once, when the run starts, into dictionaries, so checking a
record is a lookup.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from etrmflow import hookimpl
from etrmflow.builtins.validators import truncate
from etrmflow.components import ValidationContext, Validator, Violation
from etrmflow.validation.reference import (
    MISSING,
    Field,
    number_text,
    project_file,
    read_csv,
    read_sqlite_column,
    text_key,
    to_decimal,
)

FIELD_PATTERN = "^(/([^~]|~[01])*|[^/].*)$"
"""A top-level field name, or a JSON pointer (``/`` first, ``~`` only as ``~0`` or ``~1``)."""
_FIELD = {"type": "string", "minLength": 1, "pattern": FIELD_PATTERN}
_TEXT = {"type": "string", "minLength": 1}
_SHOWN_VALUES = 8


def _values_source(values: list[Any]) -> tuple[set[str], str]:
    allowed = {key for value in values if (key := text_key(value)) is not None}
    shown = ", ".join(sorted(allowed)) if len(allowed) <= _SHOWN_VALUES else f"{len(allowed)} values"
    return allowed, f"the listed values ({shown})"


def _file_source(options: Mapping[str, Any], project_dir: str) -> tuple[set[str], str]:
    path = project_file(project_dir, options["file"], "reference data file")
    allowed = {cells[0] for _, cells in read_csv(path, [options["column"]]) if cells[0] != ""}
    return allowed, f"column {options['column']!r} of {options['file']}"


def _database_source(options: Mapping[str, Any], project_dir: str) -> tuple[set[str], str]:
    path = project_file(project_dir, options["database"], "reference database")
    allowed = read_sqlite_column(path, options["table"], options["column"])
    return allowed, f"column {options['column']!r} of table {options['table']!r} in {options['database']}"


def load_reference(options: Mapping[str, Any], project_dir: str) -> tuple[set[str], str]:
    """The allowed values (as ``text_key`` gives them) and a description of where they came from."""
    given = [name for name in ("values", "file", "database") if name in options]
    if len(given) != 1:
        raise ValueError("give exactly one source of reference data: values, file (with column) or "
                         f"database (with table and column); got {', '.join(given) or 'none'}")
    if given == ["values"]:
        allowed, source = _values_source(options["values"])
    elif given == ["file"]:
        allowed, source = _file_source(options, project_dir)
    else:
        allowed, source = _database_source(options, project_dir)
    if not allowed:
        raise ValueError(f"{source} holds no values: every record would be quarantined")
    return allowed, source


class ReferenceDataValidator(Validator):
    """A field's value must be a known one: listed, in a CSV column, or in an SQLite column.

    The reference data is read once, when the run starts; a missing file, table or column
    fails the run before anything is fetched. Values are compared as text: numbers in their
    shortest form (``7`` and ``7.0`` are ``"7"``), so a CSV column of ids matches numeric
    fields. A record whose field is missing or null is not judged (the schema's ``required``
    reports it). A violation has the field's pointer and the keyword ``reference_data``::

        # contracts/trades.yml
        validators:
          - type: reference_data
            field: counterparty_lei
            file: reference/counterparties.csv       # relative to the project folder
            column: lei
            message: unknown counterparty
          - {type: reference_data, field: currency, values: [EUR, GBP, GBX]}
          - type: reference_data
            field: /legs/0/leg_id                    # a JSON pointer reaches nested fields
            database: reference/static.db
            table: legs
            column: leg_id
    """

    type_name = "reference_data"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["field"],
        "properties": {
            "field": {**_FIELD, "description": "The field to check: a top-level name, or a JSON pointer "
                                               "such as /counterparty/lei."},
            "values": {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]},
                       "description": "The allowed values, listed here."},
            "file": {**_TEXT, "description": "A CSV file (UTF-8, header line first) holding the allowed "
                                             "values, relative to the project folder."},
            "database": {**_TEXT, "description": "An SQLite database holding the allowed values, relative "
                                                 "to the project folder; opened read-only."},
            "table": {**_TEXT, "description": "With database: the table (or view)."},
            "column": {**_TEXT, "description": "With file or database: the column of allowed values "
                                               "(empty cells and NULLs are not allowed values)."},
            "message": {**_TEXT, "description": "Text put before the violation's detail, e.g. "
                                                "'unknown counterparty'."},
        },
        "dependentRequired": {"file": ["column"], "database": ["table", "column"], "table": ["database"]},
        "oneOf": [{"required": ["values"]}, {"required": ["file"]}, {"required": ["database"]}],
    }

    def __init__(self, options: Mapping[str, Any], *, context: ValidationContext) -> None:
        super().__init__(options, context=context)
        self.field = Field.parse(options["field"])
        self.allowed, self.source = load_reference(options, context.project_dir)
        self._lead = f"{options['message']}: " if options.get("message") else ""

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        get, allowed = self.field.get, self.allowed
        verdicts: list[list[Violation]] = []
        for record in records:
            value = get(record)
            known = value is MISSING or text_key(value) in allowed
            verdicts.append([] if known else [self._violation(value)])
        return verdicts

    def _violation(self, value: Any) -> Violation:
        message = truncate(f"{self._lead}{value!r} is not in {self.source}")
        return Violation(pointer=self.field.pointer, keyword=self.type_name, message=message,
                         validator=self.type_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class CurveKey:
    """One part of the lookup key: a record field, the curve column it matches, and how many
    of the value's first characters count (``10`` turns a delivery start into its local date)."""

    field: Field
    column: str
    chars: int | None = None

    def of(self, value: Any) -> str | None:
        text = text_key(value)
        return text[:self.chars] if text is not None and self.chars else text


@dataclass(frozen=True, slots=True, kw_only=True)
class CurvePoint:
    """A curve price and the range of record prices it accepts."""

    price: decimal.Decimal
    allowed: decimal.Decimal
    low: decimal.Decimal
    high: decimal.Decimal


def _curve_keys(keys: Mapping[str, Any]) -> tuple[CurveKey, ...]:
    return tuple(CurveKey(field=Field.parse(name), column=spec) if isinstance(spec, str) else
                 CurveKey(field=Field.parse(name), column=spec["column"], chars=spec.get("chars"))
                 for name, spec in keys.items())


def _band_text(band: Mapping[str, Any]) -> str:
    parts = [f"{name} {band[name]}" for name in ("absolute", "relative") if name in band]
    return parts[0] if len(parts) == 1 else f"the wider of {parts[0]} and {parts[1]}"


class CurveSnapshotValidator(Validator):
    """A price must lie within a band around the price of a forward-curve snapshot.

    The snapshot is a CSV file (UTF-8, header line first) with one price per key, e.g. per
    product and delivery day; it is read once, when the run starts. ``keys`` maps record
    fields to curve columns; ``{column: day, chars: 10}`` compares only the first 10
    characters of the record's value, so a delivery start with an offset matches the curve's
    local delivery date. The band is ``absolute`` (in price units) and/or ``relative`` (a
    fraction of the curve price); with both, the wider one applies, so ``absolute`` acts as a
    floor for curve prices near zero. Arithmetic is decimal, so a price exactly on the edge of
    the band passes. Records whose key or price is missing or not a number are not judged
    (the schema reports them). A violation has the price's pointer and the keyword
    ``curve_snapshot``::

        # contracts/trades.yml
        validators:
          - type: curve_snapshot
            file: curves/eod_2025-03-28.csv          # product,day,price
            keys:
              product_code: product
              delivery_start: {column: day, chars: 10}
            price: price
            band: {relative: 0.2, absolute: 15}
            on_missing_curve: quarantine
    """

    type_name = "curve_snapshot"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["file", "keys", "band"],
        "properties": {
            "file": {**_TEXT, "description": "The curve snapshot, a CSV file relative to the project folder."},
            "keys": {"type": "object", "minProperties": 1,
                     "additionalProperties": {"anyOf": [_TEXT, {
                         "type": "object", "additionalProperties": False, "required": ["column"],
                         "properties": {"column": _TEXT, "chars": {"type": "integer", "minimum": 1}}}]},
                     "description": "Record field (name or JSON pointer) -> curve column; or -> {column, "
                                    "chars} to compare only the first chars characters of the field's value."},
            "price": {**_FIELD, "default": "price", "description": "The record's price field."},
            "curve_price": {**_TEXT, "default": "price", "description": "The curve's price column."},
            "band": {"type": "object", "additionalProperties": False, "minProperties": 1,
                     "properties": {
                         "absolute": {"type": "number", "minimum": 0, "description": "In price units, e.g. 15."},
                         "relative": {"type": "number", "minimum": 0,
                                      "description": "A fraction of the curve price, e.g. 0.2 for 20 %."}},
                     "description": "How far a price may be from the curve: absolute (price units) and/or "
                                    "relative (a fraction of the curve price); with both, the wider."},
            "on_missing_curve": {"enum": ["quarantine", "pass"], "default": "quarantine",
                                 "description": "What a record whose key has no curve price gets."},
        },
    }

    def __init__(self, options: Mapping[str, Any], *, context: ValidationContext) -> None:
        super().__init__(options, context=context)
        self.keys = _curve_keys(options["keys"])
        self.price = Field.parse(options.get("price", "price"))
        self.file = options["file"]
        self.band_text = _band_text(options["band"])
        self.quarantine_missing = options.get("on_missing_curve", "quarantine") == "quarantine"
        self.curve = self._load(options)

    def _load(self, options: Mapping[str, Any]) -> dict[tuple[str, ...], CurvePoint]:
        path = project_file(self.context.project_dir, self.file, "curve snapshot")
        absolute = to_decimal(options["band"].get("absolute", 0))
        relative = to_decimal(options["band"].get("relative", 0))
        assert absolute is not None and relative is not None  # the schema says numbers
        curve: dict[tuple[str, ...], CurvePoint] = {}
        columns = [key.column for key in self.keys] + [options.get("curve_price", "price")]
        for line, cells in read_csv(path, columns):
            price = to_decimal(cells[-1])
            if price is None:
                raise ValueError(f"{path}:{line}: curve price {cells[-1]!r} is not a number")
            allowed = max(absolute, relative * abs(price))
            point = CurvePoint(price=price, allowed=allowed, low=price - allowed, high=price + allowed)
            earlier = curve.setdefault(cells[:-1], point)
            if earlier.price != price:
                raise ValueError(f"{path}:{line}: a second curve price for {self._describe(cells[:-1])} "
                                 f"({price}, after {earlier.price})")
        return curve

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        return [self.violations(record) for record in records]

    def violations(self, record: Any) -> list[Violation]:
        key = self._key(record)
        price = to_decimal(self.price.get(record)) if key is not None else None
        if key is None or price is None:
            return []
        point = self.curve.get(key)
        if point is None:
            return [self._no_curve(key)] if self.quarantine_missing else []
        return [] if point.low <= price <= point.high else [self._outside(price, point, key)]

    def _key(self, record: Any) -> tuple[str, ...] | None:
        parts = []
        for key in self.keys:
            value = key.field.get(record)
            part = None if value is MISSING else key.of(value)
            if part is None:
                return None
            parts.append(part)
        return tuple(parts)

    def _describe(self, key: tuple[str, ...]) -> str:
        return ", ".join(f"{k.column}={value!r}" for k, value in zip(self.keys, key))

    def _outside(self, price: decimal.Decimal, point: CurvePoint, key: tuple[str, ...]) -> Violation:
        low, high, curve, allowed = map(number_text, (point.low, point.high, point.price, point.allowed))
        message = (f"price {number_text(price)} is outside {low}..{high}: curve price {curve} ± {allowed} "
                   f"({self.band_text}) for {self._describe(key)} in {self.file}")
        return Violation(pointer=self.price.pointer, keyword=self.type_name, message=truncate(message),
                         validator=self.type_name)

    def _no_curve(self, key: tuple[str, ...]) -> Violation:
        message = f"no curve price for {self._describe(key)} in {self.file}"
        return Violation(pointer="", keyword=self.type_name, message=truncate(message), validator=self.type_name)


@hookimpl
def etrmflow_validator_types() -> list[type]:
    """The reference_data and curve_snapshot validators."""
    return [ReferenceDataValidator, CurveSnapshotValidator]
