"""DecimalFields converts declared money as ``to_decimal`` does, value by value, whatever it
remembered from earlier pages, and never changes the records it was given."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from etrmflow.validation.decimal_fields import DecimalFields
from etrmflow.validation.decimals import DecimalSpec, to_decimal

MONEY = {"type": "number", "x-etrmflow-decimal": {"scale": 2, "precision": 18}}
SCHEMA = {"type": "object", "properties": {"price": MONEY, "notional": MONEY, "name": {"type": "string"},
                                           "legs": {"type": "array", "items": {"properties": {"price": MONEY}}}}}
CENTS = DecimalSpec(scale=2, precision=18)

numbers = st.one_of(st.integers(min_value=-10**6, max_value=10**6).map(lambda c: c / 100),
                    st.integers(min_value=-10**6, max_value=10**6),
                    st.decimals(min_value=-10**6, max_value=10**6, places=2),
                    st.sampled_from([0.0, -0.0, Decimal("-0.00"), Decimal("40.5"), Decimal("40.50"), 40.5, 0,
                                     None, "40.45", True]))
records = st.lists(st.fixed_dictionaries({"price": numbers, "name": st.just("x")},
                                         optional={"notional": numbers,
                                                   "legs": st.lists(st.fixed_dictionaries({"price": numbers}))}),
                   max_size=6)


def expected(record: dict[str, Any]) -> dict[str, Any]:
    out = {key: to_decimal(value, CENTS) if key in ("price", "notional") else value for key, value in record.items()}
    if "legs" in out:
        out["legs"] = [{**leg, "price": to_decimal(leg["price"], CENTS)} for leg in out["legs"]]
    return out


def exact(value: Any) -> Any:
    """Decimals with their exponent and sign, so that Decimal('-0.00') differs from Decimal('0.00')."""
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [exact(item) for item in value]
    return (type(value).__name__, value)


fields = DecimalFields(SCHEMA)  # one for every example: what it remembers must never leak


@settings(max_examples=300, deadline=None)
@given(batch=records)
def test_convert_is_to_decimal_of_every_declared_value(batch: list[dict[str, Any]]) -> None:
    sent = copy.deepcopy(batch)
    assert exact(fields.convert(batch)) == exact([expected(record) for record in batch])
    assert batch == sent  # the records as the vendor sent them stay untouched


def test_the_same_number_gives_the_same_decimal_and_zeros_keep_their_sign() -> None:
    fresh = DecimalFields(SCHEMA)
    batch = [{"price": 40.5}, {"price": 40.5}, {"price": -0.0}, {"price": 0.0}, {"price": -0.0}]
    assert [str(r["price"]) for r in fresh.convert(batch)] == ["40.50", "40.50", "-0.00", "0.00", "-0.00"]


def _outcome(convert: Any, value: float) -> tuple[str, str]:
    try:
        return ("decimal", str(convert(value)))
    except ArithmeticError as exc:  # decimal.Inexact: to_decimal refuses to round
        return ("refused", type(exc).__name__)


@settings(max_examples=400, deadline=None)
@given(scale=st.integers(min_value=0, max_value=38), units=st.integers(min_value=-10**15, max_value=10**15),
       nudge=st.sampled_from([0, 1, -1]))
def test_floats_at_any_scale_convert_as_to_decimal_does(scale: int, units: int, nudge: int) -> None:
    # Above scale 22, 10**scale is no float: the shortcut through k / 10**scale must not apply,
    # or a float whose digits go beyond the scale is silently rounded to k.
    spec = DecimalSpec(scale=scale, precision=38)
    value = float(Decimal(units).scaleb(-scale))
    value = math.nextafter(value, math.copysign(math.inf, nudge)) if nudge else value
    fresh = DecimalFields({"properties": {"price": {"x-etrmflow-decimal": {"scale": scale, "precision": 38}}}})
    converted = _outcome(lambda v: fresh.convert([{"price": v}])[0]["price"], value)
    assert converted == _outcome(lambda v: to_decimal(v, spec), value), repr(value)


def test_a_float_with_digits_beyond_a_large_scale_is_not_rounded() -> None:
    fresh = DecimalFields({"properties": {"p": {"x-etrmflow-decimal": {"scale": 23, "precision": 23}}}})
    value = 5.3732711567561606e-09  # 25 decimals: more than the scale
    assert _outcome(lambda v: fresh.convert([{"p": v}])[0]["p"], value) == ("refused", "Inexact")
