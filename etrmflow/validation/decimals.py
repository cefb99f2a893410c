"""Exact decimal money: the ``x-etrmflow-decimal`` schema keyword.

A contract marks a number as exact decimal money in its property schema::

    price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}

``scale`` is the most digits after the decimal point, ``precision`` the most digits in all
(SQL's NUMERIC(precision, scale); 1 to 38, default 18). JSON decoders hand us such a value as
a float. A float read from JSON text of at most 15 significant digits gives those digits back
through ``repr`` (``repr(float("40.45")) == "40.45"``), so ``Decimal(repr(value))`` is what the
vendor wrote. A number with more digits than a double holds is read by ``etrmflow.jsontext``
as a ``JsonNumber``, whose ``repr`` is the vendor's text: it is judged by every digit. A value
with more decimals than the scale, more digits than the precision allows, or a plain float of
more than 15 significant digits (which it cannot have carried exactly) is a violation with
keyword ``x-etrmflow-decimal``: the record is quarantined, never rounded.

After validation the engine turns declared values into ``Decimal`` at the declared scale
(``to_decimal``), and the sinks store them exactly.
"""

from __future__ import annotations

import decimal
import functools
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import jsonschema

from etrmflow.jsontext import JsonNumber

KEYWORD = "x-etrmflow-decimal"
FLOAT_DIGITS = 15
"""Significant digits a float read from JSON always gives back exactly (DBL_DIG)."""
MAX_PRECISION = 38
"""decimal128's limit, which Parquet and Arrow share."""
DEFAULT_PRECISION = 18

_QUANTA = tuple(Decimal(1).scaleb(-scale) for scale in range(MAX_PRECISION + 1))
_UNITS = tuple(float(10 ** scale) for scale in range(MAX_PRECISION + 1))
_LIMITS = {(scale, precision): float(10 ** (min(FLOAT_DIGITS, precision) - scale))
           for precision in range(1, MAX_PRECISION + 1) for scale in range(precision + 1)}
# Quantizing a validated value only appends zeros; Inexact would mean a bug, so it raises.
_CONTEXT = decimal.Context(prec=MAX_PRECISION, traps=[decimal.Inexact, decimal.InvalidOperation])


@dataclass(frozen=True, slots=True, kw_only=True)
class DecimalSpec:
    """A declared exact decimal: at most ``precision`` digits, ``scale`` of them decimals."""

    scale: int
    precision: int = DEFAULT_PRECISION

    @property
    def integer_digits(self) -> int:
        return self.precision - self.scale

    @property
    def quantum(self) -> Decimal:
        """One unit of the last decimal place: Decimal('0.01') for scale 2."""
        return _QUANTA[self.scale]


def spec_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid ``x-etrmflow-decimal`` declaration, or None."""
    if not isinstance(value, Mapping):
        return "expected a mapping such as {scale: 2, precision: 18}"
    unknown = sorted(set(value) - {"scale", "precision"})
    if unknown:
        return f"unknown key(s) {', '.join(map(str, unknown))} (allowed: scale, precision)"
    precision, scale = value.get("precision", DEFAULT_PRECISION), value.get("scale")
    if not _is_int(precision) or not 1 <= precision <= MAX_PRECISION:
        return f"precision must be an integer from 1 to {MAX_PRECISION}, got {precision!r}"
    if not _is_int(scale) or not 0 <= scale <= precision:
        return f"scale must be an integer from 0 to the precision ({precision}), got {scale!r}"
    return None


def parse_spec(value: Any) -> DecimalSpec:
    """The declaration as a spec; ValueError (naming the keyword) if it is malformed."""
    problem = spec_problem(value)
    if problem:
        raise ValueError(f"{KEYWORD}: {problem}")
    return _spec(value["scale"], value.get("precision", DEFAULT_PRECISION))


@functools.lru_cache(maxsize=256)
def _spec(scale: int, precision: int) -> DecimalSpec:
    return DecimalSpec(scale=scale, precision=precision)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """JSON Schema's number: what the keyword judges (anything else is for ``type`` to judge)."""
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _exact(value: float | Decimal) -> Decimal:
    # repr is the shortest text that reads back as the same float: the vendor's digits.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _stripped(number: Decimal) -> tuple[int, int]:
    """(significant digits, exponent) without trailing zeros: 40.50 -> (3, -1)."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    end = len(digits)
    while end > 1 and digits[end - 1] == 0:
        end -= 1
    return end, exponent + len(digits) - end


EXACT_FLOAT_SCALE = 22
"""The largest scale whose unit 10**scale is exactly a double (10**22 is; 10**23 is not)."""


def plain_float(value: float, spec: DecimalSpec) -> bool:
    """A quick yes for the usual float: below ``10**(min(15, precision) - scale)``, and
    ``round(x * 10**scale) / 10**scale == x``. Then x is the float nearest k / 10**scale for an
    integer k < 2**53, so its shortest repr is that decimal: at most ``scale`` decimals and 15
    digits. (numpy's rint is the same half-even rounding; value_checks vectorises this.)"""
    if spec.scale > EXACT_FLOAT_SCALE:
        return False  # 10**scale is no longer an exact double: ask the definition (exact_problem)
    unit = _UNITS[spec.scale]
    return abs(value) < _LIMITS[(spec.scale, spec.precision)] and round(value * unit) / unit == value


def decimal_problem(value: Any, spec: DecimalSpec) -> str | None:
    """Why ``value`` cannot be the declared exact decimal, or None (also for non-numbers)."""
    if type(value) is float and plain_float(value, spec):  # NaN and inf are not plain
        return None
    return exact_problem(value, spec)


def exact_problem(value: Any, spec: DecimalSpec) -> str | None:
    """``decimal_problem`` by the definition alone, through ``Decimal(repr(value))``."""
    if not is_number(value):
        return None
    number = _exact(value)
    if not number.is_finite():
        return f"{value!r} is not a finite number"
    if number.is_zero():  # 0.0 and 0E-7 alike: no digit to place
        return None
    digits, exponent = _stripped(number)
    if isinstance(value, float) and not isinstance(value, JsonNumber) and digits > FLOAT_DIGITS:
        return (f"{value!r} has {digits} significant digits; a JSON number with more than "
                f"{FLOAT_DIGITS} cannot be read exactly")
    if -exponent > spec.scale:
        return f"{value!r} has more than {spec.scale} decimal places ({KEYWORD} scale {spec.scale})"
    if digits + exponent > spec.integer_digits:
        return (f"{value!r} has more than {spec.integer_digits} digits before the decimal point "
                f"({KEYWORD} precision {spec.precision}, scale {spec.scale})")
    return None


def to_decimal(value: Any, spec: DecimalSpec) -> Any:
    """A validated number as a ``Decimal`` at the declared scale (40.5 -> Decimal('40.50'));
    anything else (None, a missing value) unchanged."""
    if not is_number(value):
        return value
    return _exact(value).quantize(spec.quantum, context=_CONTEXT)


def decimal_keyword(validator: Any, declared: Any, instance: Any,
                    schema: Mapping[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """The keyword as a jsonschema keyword function: the reference the fast path must match."""
    problem = decimal_problem(instance, parse_spec(declared))
    if problem:
        yield jsonschema.ValidationError(problem)


# A declared decimal is the vendor's text: a long number (JsonNumber) meets its limits, enum and
# const by every digit, not as its double (40.4499999999999999 is below a minimum of 40.45).
# Other values get jsonschema's own functions; messages are jsonschema's.
_DRAFT = jsonschema.Draft202012Validator.VALIDATORS
_BOUNDS: dict[str, tuple[Callable[[Decimal, Decimal], bool], str]] = {
    "minimum": (operator.lt, "{!r} is less than the minimum of {!r}"),
    "maximum": (operator.gt, "{!r} is greater than the maximum of {!r}"),
    "exclusiveMinimum": (operator.le, "{!r} is less than or equal to the minimum of {!r}"),
    "exclusiveMaximum": (operator.ge, "{!r} is greater than or equal to the maximum of {!r}"),
}


def _as_text(instance: Any, schema: Any) -> bool:
    return type(instance) is JsonNumber and isinstance(schema, Mapping) and KEYWORD in schema


def _exact_limit(name: str) -> Callable[..., Iterator[jsonschema.ValidationError]]:
    broken, message = _BOUNDS[name]

    def keyword(validator: Any, limit: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
        if not (_as_text(instance, schema) and is_number(limit)):
            yield from _DRAFT[name](validator, limit, instance, schema)
        elif broken(_exact(instance), _exact(limit)):
            yield jsonschema.ValidationError(message.format(instance, limit))
    return keyword


def _multiple_of(validator: Any, step: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if not (_as_text(instance, schema) and is_number(step) and step):
        yield from _DRAFT["multipleOf"](validator, step, instance, schema)
    elif (Fraction(_exact(instance)) / Fraction(_exact(step))).denominator != 1:
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {step}")


def _equal(instance: JsonNumber, other: Any) -> bool:
    return is_number(other) and _exact(instance) == _exact(other)


def _enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if not (_as_text(instance, schema) and isinstance(enums, list)):
        yield from _DRAFT["enum"](validator, enums, instance, schema)
    elif not any(_equal(instance, each) for each in enums):
        yield jsonschema.ValidationError(f"{instance!r} is not one of {enums!r}")


def _const(validator: Any, const: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if not _as_text(instance, schema):
        yield from _DRAFT["const"](validator, const, instance, schema)
    elif not _equal(instance, const):
        yield jsonschema.ValidationError(f"{const!r} was expected")


ReferenceValidator: Any = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {KEYWORD: decimal_keyword, "multipleOf": _multiple_of, "enum": _enum, "const": _const,
     **{name: _exact_limit(name) for name in _BOUNDS}})
"""Draft 2020-12 plus ``x-etrmflow-decimal``: the reference verdicts of the json_schema validator
(a long number in a declared decimal meets the other number keywords by every digit)."""


def check_declarations(node: Any) -> None:
    """Raise ValueError for the first malformed declaration anywhere in a schema."""
    if isinstance(node, Mapping):
        if KEYWORD in node:
            parse_spec(node[KEYWORD])
        for value in node.values():
            check_declarations(value)
    elif isinstance(node, list):
        for value in node:
            check_declarations(value)


def decimal_columns(schema: Mapping[str, Any]) -> dict[str, DecimalSpec]:
    """Top-level properties declared exact decimals, directly or through a ``$ref`` to
    ``$defs``, with their specs (malformed ones raise)."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return {}
    declared = {name: _declaration(schema, spec) for name, spec in properties.items()}
    return {name: parse_spec(spec[KEYWORD]) for name, spec in declared.items() if spec is not None}


def _declaration(root: Mapping[str, Any], node: Any) -> Mapping[str, Any] | None:
    """The subschema declaring ``node`` a decimal: itself, or what its local ``$ref`` chain
    (``#/$defs/money``) reaches; the sinks must type such a column as the validator checks it."""
    for _ in range(32):  # a ref cycle declares nothing
        if not isinstance(node, Mapping):
            return None
        if KEYWORD in node:
            return node
        ref = node.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            return None
        definitions = root.get("$defs")
        node = definitions.get(ref.removeprefix("#/$defs/")) if isinstance(definitions, Mapping) else None
    return None

