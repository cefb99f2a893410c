"""The column-wise cell conversions of the sinks give exactly what the cell-by-cell definitions
give: ``column_values`` is ``plain_value`` of each cell, ``iso_texts`` is ``isoformat()``,
``decimal_cells`` / ``decimal_texts`` are ``decimal_cell`` / ``decimal_text`` of each cell,
failures included."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etrmflow.sinks.cells import (
    column_values,
    decimal_cell,
    decimal_cells,
    decimal_text,
    decimal_texts,
    dumps_json,
    is_missing,
    iso_texts,
    plain_value,
)
from etrmflow.validation.decimals import DecimalSpec

CENTS = DecimalSpec(scale=2, precision=18)
ZONES = ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


def by_cell(series: pd.Series) -> list[Any]:
    return [plain_value(v) for v in series.tolist()]


def same(left: list[Any], right: list[Any]) -> bool:
    """Equal cell by cell, with the same types (1 and 1.0 and True differ here)."""
    return len(left) == len(right) and all(type(a) is type(b) and a == b for a, b in zip(left, right))


@pytest.mark.parametrize("series", [
    pd.Series([1, 2, -3], dtype="int64"),
    pd.Series([True, False], dtype="bool"),
    pd.Series([1.5, -0.0, 40.45], dtype="float64"),
    pd.Series([1.5, float("nan"), 3.0], dtype="float64"),
    pd.Series([1.5, 2.25], dtype="float32"),
    pd.Series(["a", None, "c"], dtype="str"),
    pd.Series(["a", None, "c"], dtype="string"),
    pd.Series(["a", 1, 2.5, None, float("nan"), True, Decimal("1.50"), [1, 2], {"b": 1, "a": 2},
               np.int64(3), np.float64(2.5), pd.NA, pd.NaT, dt.date(2025, 3, 30)], dtype=object),
    pd.Series([1, None], dtype="Int64"),
    pd.Series([pd.Timedelta(seconds=90), pd.NaT]),
    pd.Series(pd.to_datetime(["2025-03-30T01:02:03", None]).as_unit("ns")),
], ids=lambda s: str(s.dtype))
def test_column_values_is_plain_value_of_each_cell(series: pd.Series) -> None:
    assert same(column_values(series), by_cell(series))


def test_json_columns_are_json_text_of_each_present_cell() -> None:
    series = pd.Series([[{"b": 1, "a": Decimal("2.50")}], None, float("nan"), {"x": [1]}, []], dtype=object)
    expected = [None if not isinstance(v, (list, dict)) and is_missing(v) else dumps_json(v) for v in series]
    assert column_values(series, as_json=True) == expected
    assert expected[0] == '[{"a":2.5,"b":1}]' and expected[4] == "[]"


# --- timestamps -----------------------------------------------------------------------------------

ticks = st.integers(min_value=-2_208_988_800 * 10**9, max_value=4_102_444_800 * 10**9)  # 1900..2100


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(ticks, st.sampled_from([0, 10**9 // 2, 1_743_296_400 * 10**9 + 1000,
                                                          1_761_440_400 * 10**9]), st.none()), max_size=40),
       zone=st.sampled_from([None, *ZONES]), unit=st.sampled_from(["s", "ms", "us", "ns"]))
def test_iso_texts_are_isoformat_of_each_cell(values: list[int | None], zone: str | None, unit: str) -> None:
    series = pd.Series(pd.to_datetime(values, unit="ns", utc=zone is not None)).dt.as_unit(unit)
    if zone is not None:
        series = series.dt.tz_convert(zone)
    assert iso_texts(series) == [None if v is pd.NaT else v.isoformat() for v in series.tolist()]
    assert iso_texts(series) == by_cell(series)


@pytest.mark.parametrize("text", ["1850-01-01T00:00:00", "1900-06-01T12:00:00.25", "2025-03-30T02:30:00.000001",
                                  "2025-10-26T02:30:00.123456789", "0001-01-01T00:00:00", "9999-12-31T23:59:59"])
@pytest.mark.parametrize("zone", [None, "Europe/Amsterdam", "Europe/Berlin", "UTC"])
def test_iso_texts_of_odd_offsets_fractions_and_ends_of_the_calendar(text: str, zone: str | None) -> None:
    stamp = pd.Timestamp(text)
    if zone is not None:
        stamp = stamp.tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
    series = pd.Series([stamp, stamp, None], dtype=pd.Series([stamp]).dtype)
    assert iso_texts(series) == [stamp.isoformat(), stamp.isoformat(), None]


def test_iso_texts_of_lmt_offsets_keep_their_seconds() -> None:
    series = pd.Series([pd.Timestamp("1850-01-01", tz="Europe/Berlin")])
    assert iso_texts(series) == ["1850-01-01T00:00:00+00:53:28"]


# --- declared decimals ----------------------------------------------------------------------------

def outcome(function: Any, value: Any, spec: DecimalSpec) -> Any:
    try:
        return ("ok", function(value, spec))
    except (ValueError, TypeError) as exc:
        return ("error", type(exc), str(exc))


def cell_texts(value: Any, spec: DecimalSpec) -> str | None:
    return decimal_text(decimal_cell(value, spec))


def column_outcome(function: Any, values: list[Any], spec: DecimalSpec) -> list[Any]:
    """Cell by cell, each through the column function (a column stops at its first bad cell)."""
    out = []
    for value in values:
        try:
            out.append(("ok", function(pd.Series([value], dtype=object), spec)[0]))
        except (ValueError, TypeError) as exc:
            out.append(("error", type(exc), str(exc)))
    return out


def shown(result: Any) -> Any:
    """Decimals compared with their exponent and sign (Decimal('-0.00') is not Decimal('0.00'))."""
    if result[0] == "ok" and isinstance(result[1], Decimal):
        return ("ok", str(result[1]), result[1].as_tuple())
    return result


money = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-10**20, max_value=10**20).map(lambda cents: cents / 100),
    st.integers(min_value=-10**18, max_value=10**18),
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.decimals(min_value=-10**17, max_value=10**17, places=2),
    st.sampled_from([0.0, -0.0, Decimal("-0"), Decimal("0E+5"), Decimal("-0.00"), Decimal("1E+2"),
                     Decimal("40.450"), Decimal("40.5"), Decimal("sNaN"), Decimal("NaN"), None, True,
                     "40.45", np.float64(40.45), np.int64(7), Decimal("9999999999999999.99"),
                     Decimal("10000000000000000.00"), Decimal("1E-9")]),
)


@settings(max_examples=400, deadline=None)
@given(values=st.lists(money, max_size=8), scale=st.integers(min_value=0, max_value=4),
       precision=st.sampled_from([4, 18, 38]))
def test_decimal_columns_are_decimal_cell_of_each_cell(values: list[Any], scale: int, precision: int) -> None:
    spec = DecimalSpec(scale=min(scale, precision), precision=precision)
    for _ in range(2):  # the second time round, from what the first remembered
        assert [shown(r) for r in column_outcome(decimal_cells, values, spec)] == \
            [shown(outcome(decimal_cell, v, spec)) for v in values]
        assert column_outcome(decimal_texts, values, spec) == [outcome(cell_texts, v, spec) for v in values]


def test_remembered_zeros_keep_their_sign() -> None:
    values = pd.Series([0.0, -0.0, Decimal("0.00"), Decimal("-0.00"), 0, 12.5, 12.5], dtype=object)
    assert decimal_texts(values, CENTS) == ["0.00", "-0.00", "0.00", "-0.00", "0.00", "12.50", "12.50"]
    assert decimal_texts(values, CENTS) == ["0.00", "-0.00", "0.00", "-0.00", "0.00", "12.50", "12.50"]


def test_a_bad_cell_fails_the_column_even_when_an_equal_value_was_fine() -> None:
    assert decimal_texts(pd.Series([40.45, 1e20], dtype=object), DecimalSpec(scale=2, precision=38)) == \
        ["40.45", "100000000000000000000.00"]
    with pytest.raises(ValueError, match="more than 2 decimal places"):
        decimal_texts(pd.Series([Decimal("40.45"), Decimal("40.455")], dtype=object), CENTS)
    with pytest.raises(ValueError, match="digits before the decimal point"):
        decimal_cells(pd.Series([Decimal("1E+17")], dtype=object), CENTS)
    assert math.isnan(float("nan"))


def test_remembered_texts_belong_to_their_zone_and_unit() -> None:
    utc = pd.Series(pd.to_datetime(["2025-03-30T01:00:00Z", "2025-10-26T01:30:00Z", None], utc=True))
    for zone in ("UTC", "Europe/Berlin", "Europe/London", "UTC", "Europe/Berlin"):
        for unit in ("s", "us", "ns"):
            series = utc.dt.tz_convert(zone).dt.as_unit(unit)
            assert iso_texts(series) == [None if v is pd.NaT else v.isoformat() for v in series.tolist()]
    assert iso_texts(utc.dt.tz_convert("Europe/Berlin"))[:2] == ["2025-03-30T03:00:00+02:00",
                                                                 "2025-10-26T02:30:00+01:00"]


def test_zones_of_one_name_but_different_offsets_do_not_share_texts() -> None:
    # str(dtype) names a zone by its name alone: "datetime64[us, CET]" for both of these.
    utc = pd.Series(pd.to_datetime(["2025-01-01T00:00:00Z", "2025-07-01T00:00:00Z"], utc=True))
    for hours in (1, 2, 1):
        series = utc.dt.tz_convert(dt.timezone(dt.timedelta(hours=hours), "CET"))
        assert iso_texts(series) == [v.isoformat() for v in series.tolist()]
