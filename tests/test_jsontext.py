"""etrmflow.jsontext: JSON read and written without changing a number, at orjson's speed for
the usual page."""

from __future__ import annotations

import pickle
from decimal import Decimal
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etrmflow import jsontext
from etrmflow.jsontext import JsonNumber


def exact(text: bytes | str) -> Any:
    """Every number of the text as the exact Decimal it spells."""
    import json

    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def meant(text: bytes | str) -> Any:
    """``exact``, but for a double printed to 17 significant digits, which means that double."""
    import json

    def number(spelled: str) -> Decimal:
        double = float(spelled)
        return Decimal(repr(double)) if Decimal(spelled) == Decimal(f"{double:.17g}") else Decimal(spelled)

    return json.loads(text, parse_float=number, parse_int=Decimal)


def as_decimals(value: Any) -> Any:
    """What a decoded value says each number is, exactly (a float by its shortest repr)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, list):
        return [as_decimals(item) for item in value]
    return {key: as_decimals(item) for key, item in value.items()}


number_texts = st.one_of(
    st.integers().map(str),
    st.integers(0, 25).flatmap(lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places))
    .map(lambda d: format(d, "f")),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?[1-9][0-9]{0,25}\.[0-9]{1,25}", fullmatch=True),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.17g}"),
)
json_texts = st.recursive(
    st.one_of(number_texts, st.sampled_from(['"x"', '"12345678901234567"', "true", "null"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
                            st.lists(inner, max_size=4).map(
                                lambda items: "{" + ", ".join(f'"k{n}": {v}' for n, v in enumerate(items)) + "}")),
    max_leaves=12)


@given(json_texts)
def test_every_number_reads_as_the_exact_value_it_spells(text: str) -> None:
    assert as_decimals(jsontext.loads(text.encode())) == meant(text)


@pytest.mark.parametrize("printed, double", [
    ("40.450000000000003", 40.45), ("0.10000000000000001", 0.1), ("4.0450000000000003e1", 40.45)])
def test_a_double_printed_to_17_digits_reads_as_that_double(printed: str, double: float) -> None:
    value = jsontext.loads(f"[{printed}]")[0]
    assert type(value) is float and value == double


@pytest.mark.parametrize("written", ["40.450000000000004", "40.4500000000000001", "0.10000000000000000001"])
def test_digits_no_double_prints_stay_as_written(written: str) -> None:
    value = jsontext.loads(f"[{written}]")[0]
    assert type(value) is JsonNumber and repr(value) == written


@given(json_texts)
def test_what_is_read_is_written_back_with_the_same_digits(text: str) -> None:
    value = jsontext.loads(text)
    assert exact(jsontext.dumps(value)) == meant(text)
    assert exact(jsontext.dumps(value, option=orjson.OPT_SORT_KEYS)) == meant(text)


def test_a_page_without_long_numbers_is_orjson_s_own_reading() -> None:
    body = b'{"trades": [{"id": "ACME-T-0000001", "price": 44.81, "volume": 308.4, "n": 1234567}]}'
    value = jsontext.loads(body)
    assert value == orjson.loads(body)
    assert type(value["trades"][0]["price"]) is float


def test_a_long_digit_run_inside_a_string_changes_nothing_but_the_path() -> None:
    body = b'{"uti": "1234567890123456789012", "price": 40.45, "big": 9007199254740993}'
    value = jsontext.loads(body)
    assert value == {"uti": "1234567890123456789012", "price": 40.45, "big": 9007199254740993}
    assert type(value["price"]) is float


def test_a_number_no_double_holds_keeps_its_text_and_stays_a_float() -> None:
    number = jsontext.loads(b"[40.4500000000000001]")[0]
    assert isinstance(number, JsonNumber) and isinstance(number, float)
    assert repr(number) == str(number) == "40.4500000000000001"
    assert number == 40.45  # arithmetic sees the nearest double
    assert repr(pickle.loads(pickle.dumps(number))) == "40.4500000000000001"


def test_integers_beyond_64_bits_stay_integers() -> None:
    value = jsontext.loads(b"[18446744073709551617, -9223372036854775809, 18446744073709551615]")
    assert value == [2**64 + 1, -2**63 - 1, 2**64 - 1]
    assert all(type(item) is int for item in value)
    assert jsontext.dumps({"b": value, "a": 1}, option=orjson.OPT_SORT_KEYS) == (
        b'{"a":1,"b":[18446744073709551617,-9223372036854775809,18446744073709551615]}')


def test_jsonschema_does_not_take_a_long_fraction_for_an_integer() -> None:
    validator = jsonschema.Draft202012Validator({"type": "integer"})
    assert not validator.is_valid(jsontext.loads(b"1.0000000000000000001"))
    assert validator.is_valid(jsontext.loads(b"1.00000000000000000000"))


def test_dumps_asks_the_callers_default_for_other_types_and_refuses_what_nobody_writes() -> None:
    assert jsontext.dumps([Decimal("1.10")], default=lambda d: orjson.Fragment(str(d))) == b"[1.10]"
    with pytest.raises(TypeError, match="Decimal"):
        jsontext.dumps([Decimal("1.10")])


def test_text_that_is_not_json_is_refused_as_a_value_error() -> None:
    for body in (b'{"a": 1', b"[12345678901234567890123, ", b"\xff"):
        with pytest.raises(ValueError):
            jsontext.loads(body)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.text(),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=15)


@given(json_values, st.sampled_from([0, orjson.OPT_SORT_KEYS, orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE]))
def test_what_orjson_refuses_is_written_as_orjson_writes_the_rest(value: Any, option: int) -> None:
    from etrmflow.jsontext import _written_by_hand

    assert _written_by_hand(value, lambda item: item, option) == orjson.dumps(value, option=option)


def test_nesting_deeper_than_orjson_writes_round_trips_byte_for_byte() -> None:
    text = b"[" * 1000 + b'{"b":18446744073709551617,"a":0.10000000000000000001}' + b"]" * 1000
    assert jsontext.dumps(jsontext.loads(text)) == text
    assert jsontext.dumps(jsontext.loads(text), option=orjson.OPT_SORT_KEYS) == text.replace(
        b'"b":18446744073709551617,"a":0.10000000000000000001', b'"a":0.10000000000000000001,"b":18446744073709551617')
