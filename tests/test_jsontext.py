"""etrmflow.jsontext: JSON read and written without changing a number, at orjson's speed for
the usual page."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
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


@given(json_values, st.sampled_from([0, orjson.OPT_SORT_KEYS, orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE,
                                      orjson.OPT_INDENT_2, orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS]))
def test_what_orjson_refuses_is_written_as_orjson_writes_the_rest(value: Any, option: int) -> None:
    from etrmflow.jsontext import _written_by_hand

    assert _written_by_hand(value, lambda item: item, option) == orjson.dumps(value, option=option)


def test_nesting_deeper_than_orjson_writes_round_trips_byte_for_byte() -> None:
    text = b"[" * 1000 + b'{"b":18446744073709551617,"a":0.10000000000000000001}' + b"]" * 1000
    assert jsontext.dumps(jsontext.loads(text)) == text
    assert jsontext.dumps(jsontext.loads(text), option=orjson.OPT_SORT_KEYS) == text.replace(
        b'"b":18446744073709551617,"a":0.10000000000000000001', b'"a":0.10000000000000000001,"b":18446744073709551617')



# --- lone surrogates: "Ac\ud800me" is JSON syntax but no Unicode --------------------------------

LONE = rb'{"id": "D-1", "name": "Ac\ud800me", "legs": [{"n\udc00te": 1}, {"ok": 2}], "fine": {"x": "\ud83d\ude00"}}'


def test_a_lone_surrogate_is_refused_unless_the_caller_reads_them() -> None:
    with pytest.raises(orjson.JSONDecodeError, match="surrogate"):
        jsontext.loads(LONE)
    value = jsontext.loads(LONE, lone_surrogates=True)
    assert value == json.loads(LONE)
    assert value["name"] == "Ac\ud800me" and value["legs"][0] == {"n\udc00te": 1}


def test_each_object_and_array_holding_a_lone_surrogate_is_marked_and_nothing_else() -> None:
    value = jsontext.loads(LONE, lone_surrogates=True)
    assert type(value) is jsontext.LoneSurrogateDict
    assert type(value["legs"]) is jsontext.LoneSurrogateList
    assert type(value["legs"][0]) is jsontext.LoneSurrogateDict  # its key holds one
    assert type(value["legs"][1]) is dict and type(value["fine"]) is dict
    assert value["fine"]["x"] == "\U0001F600"  # a whole pair is one character
    assert type(jsontext.loads(rb'"\udfff"', lone_surrogates=True)) is str


def test_a_text_orjson_reads_is_orjson_s_reading_even_when_lone_surrogates_are_allowed() -> None:
    body = rb'{"a": ["\ud83d\ude00", 1.5, 7]}'
    value = jsontext.loads(body, lone_surrogates=True)
    assert value == orjson.loads(body) and type(value) is dict and type(value["a"]) is list


@pytest.mark.parametrize("body", [
    rb'["\ud800", NaN]', rb'["\ud800", -Infinity]', rb'["\ud800",]', rb'["\ud800"', rb'["\ud800" "x"]',
    b'["\xed\xa0\x80"]',  # the surrogate's own bytes: not UTF-8, so not JSON text
    b'["\\ud800", "\x01"]', b'\xef\xbb\xbf["\\ud800"]', rb'["\ud800"] x', rb'{"\ud800": 1 2}',
    "[\"\ud800\"]",  # a Python string holding the code point itself: no UTF-8 either
    rb'["\\ud800"]x',
])
def test_text_with_a_lone_surrogate_that_is_not_json_for_another_reason_is_still_refused(body: bytes | str) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        jsontext.loads(body, lone_surrogates=True)


def test_numbers_stay_exact_on_a_text_read_for_its_lone_surrogate() -> None:
    value = jsontext.loads(rb'[40.4500000000000001, 18446744073709551617, 1.5, 40.450000000000003, "\ud800"]',
                           lone_surrogates=True)
    assert [type(item) for item in value[:4]] == [JsonNumber, int, float, float]
    assert repr(value[0]) == "40.4500000000000001" and value[1] == 2**64 + 1 and value[3] == 40.45


def test_a_lone_surrogate_is_written_back_as_its_escape_byte_for_byte() -> None:
    text = rb'{"a":"Ac\ud800me","b":[{"n\udc00te":1},"\udfff\ud800x\"\\"],"c":"' + "\U0001F600".encode() + b'"}'
    value = jsontext.loads(text, lone_surrogates=True)
    assert jsontext.dumps(value) == text
    assert jsontext.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE) == text + b"\n"
    assert b"\xef\xbf\xbd" not in jsontext.dumps(value)  # never U+FFFD
    assert jsontext.dumps(dict(value)) == text  # unmarked, as a masked copy is: the same


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts_with_lone_surrogates = st.lists(st.one_of(st.text(max_size=4), surrogates), min_size=1, max_size=6).map(
    "".join).filter(lambda text: not re.search("[\ud800-\udbff][\udc00-\udfff]", text))
"""Not a high surrogate just before a low one: two code points no reader gives (it reads them
as the one character of the pair), which written back would read as that character."""


@given(st.recursive(st.one_of(texts_with_lone_surrogates, st.integers(), st.none()),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(texts_with_lone_surrogates, inner, max_size=3)),
                    max_leaves=8),
       st.sampled_from([0, orjson.OPT_SORT_KEYS, orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS]))
def test_any_value_with_lone_surrogates_round_trips(value: Any, option: int) -> None:
    written = jsontext.dumps(value, option=option)
    written.decode("utf-8")  # valid UTF-8: the surrogates are escapes
    assert json.loads(written) == value
    assert jsontext.dumps(jsontext.loads(written, lone_surrogates=True), option=option) == written


def test_pretty_indents_a_value_with_a_lone_surrogate_as_orjson_indents_the_rest() -> None:
    value = jsontext.loads(rb'{"b": [1, {}], "a": "x\ud800", "c": []}', lone_surrogates=True)
    assert jsontext.pretty(value) == '{\n  "b": [\n    1,\n    {}\n  ],\n  "a": "x\\ud800",\n  "c": []\n}'


def test_a_lone_surrogate_nested_as_deep_as_orjson_reads_is_marked_and_written_back() -> None:
    text = b"[" * 1000 + rb'{"k":"\ud800"}' + b"]" * 1000
    value = jsontext.loads(text, lone_surrogates=True)
    assert type(value) is jsontext.LoneSurrogateList
    assert jsontext.dumps(value) == text


def test_escape_lone_surrogates_makes_text_printable_and_leaves_the_rest() -> None:
    assert jsontext.escape_lone_surrogates("Ac\ud800me \U0001F600 \\u") == "Ac\\ud800me \U0001F600 \\u"
    assert jsontext.has_lone_surrogate("a\udc00") and not jsontext.has_lone_surrogate("\U0001F600")


def test_record_hashes_and_staged_cells_cope_with_lone_surrogates() -> None:
    from etrmflow.engine.processing import record_sha256
    from etrmflow.engine.staging_codec import dumps_tagged, loads_tagged

    record = jsontext.loads(rb'{"b": "Ac\ud800me", "a": {"n\udc00": [1.5, 40.4500000000000001]}}',
                            lone_surrogates=True)
    assert record_sha256(record) == hashlib.sha256(
        rb'{"a":{"n\udc00":[1.5,40.4500000000000001]},"b":"Ac\ud800me"}').hexdigest()
    staged = dumps_tagged(record)
    assert "\\ud800" in staged and loads_tagged(staged) == record
