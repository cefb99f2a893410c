"""Exact arithmetic for money in steps: sums and products of Decimals never round; a quotient
is rounded once, half to even, at a declared scale."""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import pandas as pd

from etrmflow.steps.common import StepError

EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                        traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
"""Sums and products in this context are exact, or raise (they cannot round silently)."""


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, decimal.Decimal) and value.is_nan()


def has_decimals(series: pd.Series) -> bool:
    """True when the column holds Decimal values (money declared x-etrmflow-decimal)."""
    return series.dtype == object and any(isinstance(v, decimal.Decimal) for v in series.tolist())


def to_decimal(value: Any, what: str) -> decimal.Decimal:
    """A number as a Decimal: a float by its shortest repr, i.e. the digits the vendor sent."""
    item = getattr(value, "item", None)
    value = item() if callable(item) and not isinstance(value, decimal.Decimal) else value
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return decimal.Decimal(value)
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    raise StepError(f"{what}: {value!r} is not a number")


def exact_sum(values: Iterable[decimal.Decimal]) -> decimal.Decimal:
    total = decimal.Decimal(0)
    for value in values:
        total = EXACT.add(total, value)
    return total


def exact_product(a: decimal.Decimal, b: decimal.Decimal) -> decimal.Decimal:
    return EXACT.multiply(a, b)


def divide(numerator: decimal.Decimal, denominator: decimal.Decimal, scale: int) -> decimal.Decimal:
    """``numerator / denominator`` rounded half to even to ``scale`` decimals, in one rounding."""
    quotient = round(Fraction(numerator) / Fraction(denominator), scale)  # Fraction rounds half to even
    units = quotient * 10**scale  # a whole number: the quotient has at most ``scale`` decimals
    return decimal.Decimal(f"{int(units)}E-{scale}")
