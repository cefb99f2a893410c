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
from etrmflow.expr.values import (
    BINARY,
    COMPARE,
    MAX_DIGITS,
    Fn,
    checked_digits,
    describe,
    exact,
    is_present,
)
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


def whole(value: Any) -> Any:
    """``value`` (a long number as its Decimal) if it is safe to make an integer of it."""
    value = exact(value)
    return checked_digits(value) if isinstance(value, Decimal) else value


def to_int(value: Any) -> int:
    return int(whole(value))


def checked_ndigits(ndigits: Any) -> Any:
    """round()'s digits: a whole number within ``MAX_DIGITS`` either way (round(5, -10**8)
    would compute 10**100000000), or None."""
    if ndigits is None:
        return None
    if isinstance(ndigits, bool) or not isinstance(ndigits, int):
        raise TypeError(f"round() needs a whole number of digits, got {describe(ndigits)}")
    if abs(ndigits) > MAX_DIGITS:
        raise OverflowError(f"round() to more than {MAX_DIGITS} digits")
    return ndigits


def round_value(value: Any, ndigits: Any = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"round() needs a number, got {describe(value)}")
    ndigits = checked_ndigits(ndigits)
    return round(whole(value)) if ndigits is None else round(exact(value), ndigits)


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
    "len": Function(function=_len), "round": Function(function=round_value, max_args=2),
    "present": Function(function=is_present),
    "missing": Function(function=lambda value: not is_present(value)),
    "coalesce": Function(function=_coalesce, max_args=255),
    "lower": Function(function=_case(str.lower, "lower")),
    "upper": Function(function=_case(str.upper, "upper")),
    "str": Function(function=_str), "int": Function(function=to_int, columns=False),
    "float": Function(function=float), "decimal": Function(function=to_decimal),
    "timestamp": Function(function=to_timestamp),
}
"""The functions an expression may call, by name."""
