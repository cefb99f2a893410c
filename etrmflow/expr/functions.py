"""The functions an expression may call, and their behaviour on plain values."""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from etrmflow.energy import parse_datetime_with_offset
from etrmflow.expr.values import BINARY, COMPARE, Fn, describe, exact, is_present
from etrmflow.jsontext import JsonNumber


def _coalesce(*values: Any) -> Any:
    return next((value for value in values if is_present(value)), None)


def _sequence(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        return value
    raise TypeError(f"{name}() needs a list, got {describe(value)}")


def _sum(values: Any) -> Any:
    total: Any = 0
    for value in _sequence(values, "sum"):
        total = BINARY[ast.Add](total, value)
    return total


def _extreme(pick: Callable[..., Any], name: str) -> Callable[..., Any]:
    def extreme(*values: Any) -> Any:
        items = _sequence(values[0], name) if len(values) == 1 else values
        if not any(type(item) is JsonNumber for item in items):
            return pick(items)
        return pick(items, key=functools.cmp_to_key(_exact_order))  # long numbers by every digit
    return extreme


def _exact_order(a: Any, b: Any) -> int:
    return -1 if COMPARE[ast.Lt](a, b) else int(COMPARE[ast.Gt](a, b))


def _len(value: Any) -> int:
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value)
    raise TypeError(f"len() needs a string or list, got {describe(value)}")


def _round(value: Any, ndigits: Any = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"round() needs a number, got {describe(value)}")
    value = exact(value)
    return round(value) if ndigits is None else round(value, ndigits)


def _case(method: Callable[[str], str], name: str) -> Fn:
    def convert(value: Any) -> str:
        if isinstance(value, str):
            return method(value)
        raise TypeError(f"{name}() needs a string, got {describe(value)}")
    return convert


def _present_value(value: Any, name: str) -> Any:
    if not is_present(value):
        raise TypeError(f"{name}() of {describe(value)}")
    return value


def _str(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(_present_value(value, "str"))


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("decimal() of a bool")
    return Decimal(str(_present_value(value, "decimal")))


def to_timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return parse_datetime_with_offset(value)
    raise TypeError(f"timestamp() needs a string or datetime, got {describe(value)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Function:
    function: Callable[..., Any]
    min_args: int = 1
    max_args: int = 1
    columns: bool = True
    """False when the function has no vectorised form."""

    def arity(self) -> str:
        if self.min_args == self.max_args:
            return f"{self.min_args} argument{'s' if self.min_args > 1 else ''}"
        upper = "or more" if self.max_args > 99 else f"to {self.max_args}"
        return f"{self.min_args} {upper} arguments"


FUNCTIONS: dict[str, Function] = {
    "abs": Function(function=lambda value: abs(exact(value))), "sum": Function(function=_sum, columns=False),
    "min": Function(function=_extreme(min, "min"), max_args=255, columns=False),
    "max": Function(function=_extreme(max, "max"), max_args=255, columns=False),
    "len": Function(function=_len), "round": Function(function=_round, max_args=2),
    "present": Function(function=is_present),
    "missing": Function(function=lambda value: not is_present(value)),
    "coalesce": Function(function=_coalesce, max_args=255),
    "lower": Function(function=_case(str.lower, "lower")),
    "upper": Function(function=_case(str.upper, "upper")),
    "str": Function(function=_str), "int": Function(function=lambda value: int(exact(value)), columns=False),
    "float": Function(function=float), "decimal": Function(function=to_decimal),
    "timestamp": Function(function=to_timestamp),
}
"""The functions an expression may call, by name."""
