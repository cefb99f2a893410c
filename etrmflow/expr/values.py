"""Values of the expression language: errors, MISSING, field access and guarded operators."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from etrmflow.jsontext import JsonNumber

Fn = Callable[[Any], Any]
BinaryFn = Callable[[Any, Any], Any]


class ExpressionError(ValueError):
    """An expression is malformed or uses something not allowed.

    ``column`` is 1-based (0 if unknown) and counts characters from the start of the
    expression text; ``path`` is where the expression sits, when known (``rules[2].check``).
    """

    def __init__(self, message: str, column: int = 0, *, path: str = "") -> None:
        text = f"{path}: {message}" if path else message
        super().__init__(f"{text} (column {column})" if column else text)
        self.message = message
        self.column = column
        self.path = path


class NotApplicable(Exception):
    """The expression cannot be judged on this record: a missing or null operand, a value of
    the wrong type, a division by zero. Rule validators skip the rule for that record."""


class _Missing:
    """The value of a field the record does not have. Falsy, and equal only to itself."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

RUNTIME_ERRORS = (TypeError, ValueError, ArithmeticError)


def is_present(value: Any) -> bool:
    return value is not MISSING and value is not None


def describe(value: Any) -> str:
    if value is MISSING:
        return "a missing field"
    return "null" if value is None else type(value).__name__


def field_of(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, MISSING)
    if isinstance(value, (list, tuple)):
        return [item[key] for item in value if isinstance(item, Mapping) and key in item]
    return MISSING


def item_of(value: Any, key: int | str) -> Any:
    if isinstance(key, int):
        if isinstance(value, (list, tuple)) and -len(value) <= key < len(value):
            return value[key]
        return MISSING
    return value.get(key, MISSING) if isinstance(value, Mapping) else MISSING


def exact(value: Any) -> Any:
    """A vendor's number no double holds (``etrmflow.jsontext.JsonNumber``) as the Decimal of
    its text, so that it is computed and compared as sent, not as its nearest double; any
    other value as it is."""
    return Decimal(value.text) if type(value) is JsonNumber else value


def _unify(a: Any, b: Any) -> tuple[Any, Any]:
    """Decimal meets float: the float becomes the Decimal of its shortest repr (a JsonNumber
    is a Decimal of its text)."""
    a, b = exact(a), exact(b)
    if type(a) is Decimal and type(b) is float:
        return a, Decimal(repr(b))
    if type(a) is float and type(b) is Decimal:
        return Decimal(repr(a)), b
    return a, b


def _numeric(op: BinaryFn) -> BinaryFn:
    def apply(a: Any, b: Any) -> Any:
        if type(a) is JsonNumber or type(b) is JsonNumber:  # as a float it would compute the double
            return op(*_unify(a, b))
        try:
            return op(a, b)
        except TypeError:
            return op(*_unify(a, b))
    return apply


def _ordered(op: BinaryFn) -> BinaryFn:
    def compare(a: Any, b: Any) -> Any:
        if type(a) is not type(b) or type(a) is JsonNumber:
            a, b = _unify(a, b)
        return op(a, b)
    return compare


def _member(a: Any, b: Any) -> bool:
    if type(a) in (Decimal, JsonNumber) and isinstance(b, (list, tuple)):  # 40.45 in [40.45], as written
        equal = COMPARE[ast.Eq]
        return any(equal(a, item) for item in b)
    return a in b


MAX_INT_BITS = 1_000_000
"""Largest exact integer an operator may build: Python's integers grow without bound, and
products and powers of ever larger ones run for minutes."""
MAX_DIGITS = 4_300
"""Most digits ``int()`` or ``round()`` may give a number (Python will not print more): a
Decimal such as ``1e999999999`` is short to write but a billion digits as an integer."""


def checked_digits(value: Decimal) -> Decimal:
    """``value`` when its integer part has at most ``MAX_DIGITS`` digits; else OverflowError."""
    if value.is_finite() and value.adjusted() >= MAX_DIGITS:
        raise OverflowError(f"a number with more than {MAX_DIGITS} digits")
    return value


def _multiply(a: Any, b: Any) -> Any:
    # Sequence repetition has no use in a rule and "x" * 10**9 would exhaust memory.
    if isinstance(a, (str, list, tuple)) or isinstance(b, (str, list, tuple)):
        raise TypeError("'*' needs numbers")
    if type(a) is int and type(b) is int and a.bit_length() + b.bit_length() > MAX_INT_BITS:
        raise OverflowError("product too large")
    return a * b


def _modulo(a: Any, b: Any) -> Any:
    if isinstance(a, str):  # "%999999999d" % 1 is string formatting, not arithmetic
        raise TypeError("'%' needs numbers")
    return a % b


def _power(a: Any, b: Any) -> Any:
    # Exact integer powers grow without bound: (9 ** 4096) ** 4096 would run for minutes.
    if type(a) is int and type(b) is int and b > 0 and a.bit_length() * b > MAX_INT_BITS:
        raise OverflowError("exponent too large")
    return a ** b


BINARY: dict[type, BinaryFn] = {
    ast.Add: _numeric(operator.add), ast.Sub: _numeric(operator.sub),
    ast.Mult: _numeric(_multiply), ast.Div: _numeric(operator.truediv),
    ast.FloorDiv: _numeric(operator.floordiv), ast.Mod: _numeric(_modulo),
    ast.Pow: _numeric(_power),
}
COMPARE: dict[type, BinaryFn] = {
    ast.Eq: _ordered(operator.eq), ast.NotEq: _ordered(operator.ne),
    ast.Lt: _ordered(operator.lt), ast.LtE: _ordered(operator.le),
    ast.Gt: _ordered(operator.gt), ast.GtE: _ordered(operator.ge),
    ast.In: _member, ast.NotIn: lambda a, b: not _member(a, b),
    # A missing field "is None" too: `price is not None` must not pass for an absent price.
    ast.Is: lambda a, b: not is_present(a) and not is_present(b),
    ast.IsNot: lambda a, b: is_present(a) or is_present(b),
}
