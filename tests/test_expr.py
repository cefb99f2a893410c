"""The expression language: what it allows, what it refuses, and what it means."""

from __future__ import annotations

import pickle
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etrmflow.expr import (
    FUNCTIONS,
    MISSING,
    ExpressionError,
    NotApplicable,
    compile_expression,
)

RECORD: dict[str, Any] = {
    "price": 40.45, "volume_mwh": 15, "notional": 606.75, "status": "New", "nothing": None,
    "legs": [{"volume_mwh": 5.5}, {"volume_mwh": 9.5}, {"note": "no volume"}],
    "party": {"lei": "HWUPKR0MPOU8FGXBT394", "roles": ["buyer"]},
    "odd": {"a key": 1}, "amount": Decimal("0.30"), "fee": 0.1,
    "start": datetime(2025, 10, 26, 2, 30, tzinfo=timezone(timedelta(hours=2))),
    "end": "2025-10-26T02:15:00+01:00", "naive": "2025-10-26T02:15:00",
}


def evaluate(text: str, record: dict[str, Any] = RECORD) -> Any:
    return compile_expression(text).evaluate(record)


@pytest.mark.parametrize("text, expected", [
    ("abs(notional - price * volume_mwh) <= 0.01", True),
    ("abs(sum(legs.volume_mwh) - volume_mwh) <= 0.001", True),
    ("legs.volume_mwh", [5.5, 9.5]),
    ("legs.missing_everywhere", []),
    ("legs[0].volume_mwh", 5.5),
    ("legs[-1].note", "no volume"),
    ("legs[7]", MISSING),
    ("party.lei", "HWUPKR0MPOU8FGXBT394"),
    ("party['roles'][0]", "buyer"),
    ("odd['a key']", 1),
    ("party.lei.x", MISSING),
    ("status.x", MISSING),
    ("absent", MISSING),
    ("absent.deeper[0].deepest", MISSING),
    ("present(legs) and present(price)", True),
    ("present(absent)", False),
    ("present(nothing)", False),
    ("missing(nothing) and missing(absent) and not missing(price)", True),
    ("coalesce(absent, nothing, status)", "New"),
    ("coalesce(absent, nothing)", None),
    ("lower(status) == 'new' and upper(status) == 'NEW'", True),
    ("status in ['New', 'Modify']", True),
    ("status not in ('New',)", False),
    ("'buyer' in party.roles", True),
    ("len(legs) == 3 and len(status) == 3 and len(party) == 2", True),
    ("min(legs.volume_mwh)", 5.5),
    ("max(1, volume_mwh, 2)", 15),
    ("round(price)", 40),
    ("round(2.675, 2)", 2.67),
    ("int('42') + int(2.9)", 44),
    ("float('1.5') * 2", 3.0),
    ("str(volume_mwh) + ' MWh'", "15 MWh"),
    ("str(start)", "2025-10-26T02:30:00+02:00"),
    ("decimal(price) * volume_mwh", Decimal("606.75")),
    ("decimal(amount)", Decimal("0.30")),
    ("timestamp(end) - start", timedelta(minutes=45)),
    ("timestamp(end) > start", True),
    ("amount == 0.3 and amount > 0.29 and amount + fee == decimal('0.40')", True),
    ("'N' if status == 'New' else 'M'", "N"),
    ("nothing is None and absent is None and price is not None", True),
    ("None is nothing", True),
    ("1 < volume_mwh <= 15 < 16", True),
    ("1 < volume_mwh < 2 < 3", False),
    ("-price + +price", 0.0),
    ("7 // 2 + 7 % 2 + 2 ** 3 + 7 / 2", 15.5),
    ("status == absent", False),
    ("absent == absent", True),
    ("absent != 1", True),
    ("not absent", True),
    ("absent or 'fallback'", "fallback"),
    ("price and 0", 0),
    ("[price, 'x', None]", [40.45, "x", None]),
    ("len", MISSING),  # names are fields, never Python builtins
])
def test_evaluation(text: str, expected: Any) -> None:
    assert evaluate(text) == expected
    if expected is MISSING:
        assert evaluate(text) is MISSING


@pytest.mark.parametrize("text, reason", [
    ("absent + 1", "unsupported operand type(s) for +: '_Missing' and 'int'"),
    ("nothing * 2", "unsupported operand type(s) for *: 'NoneType' and 'int'"),
    ("absent > 1", "'>' not supported between instances of '_Missing' and 'int'"),
    ("nothing <= price", "'<=' not supported between instances of 'NoneType' and 'float'"),
    ("status < 1", "'<' not supported between instances of 'str' and 'int'"),
    ("-absent", "bad operand type for unary -: '_Missing'"),
    ("price / 0", "float division by zero"),
    ("sum(absent)", "sum() needs a list, got a missing field"),
    ("sum(price)", "sum() needs a list, got float"),
    ("sum([1, nothing])", "unsupported operand type(s) for +: 'int' and 'NoneType'"),
    ("abs(nothing)", "bad operand type for abs(): 'NoneType'"),
    ("lower(absent)", "lower() needs a string, got a missing field"),
    ("upper(price)", "upper() needs a string, got float"),
    ("len(price)", "len() needs a string or list, got float"),
    ("round(status)", "round() needs a number, got str"),
    ("max([])", "max() arg is an empty sequence"),
    ("str(nothing)", "str() of null"),
    ("decimal(absent)", "decimal() of a missing field"),
    ("decimal('12,5')", "[<class 'decimal.ConversionSyntax'>]"),
    ("int('4.5')", "invalid literal for int() with base 10: '4.5'"),
    ("timestamp(naive) > start", "'2025-10-26T02:15:00' has no UTC offset: add 'Z' or an "
                                 "offset such as '+01:00' (a local time is ambiguous around a "
                                 "clock change)"),
    ("timestamp(price)", "timestamp() needs a string or datetime, got float"),
    ("'x' in absent", "argument of type '_Missing' is not iterable"),
    ("status * 3", "'*' needs numbers"),
    ("'%999999999d' % 1", "'%' needs numbers"),
    ("volume_mwh ** 1000000", "exponent too large"),
    ("(9 ** 4096) ** 4096", "exponent too large"),
])
def test_not_applicable_names_the_reason(text: str, reason: str) -> None:
    with pytest.raises(NotApplicable) as caught:
        evaluate(text)
    assert str(caught.value) == f"{text}: {reason}"


@pytest.mark.parametrize("text, message", [
    ("open('/etc/passwd')", "function 'open' is not allowed (allowed: abs, coalesce, decimal, "
                            "float, int, len, lower, max, min, missing, present, round, str, "
                            "sum, timestamp, upper) (column 1)"),
    ("price > 0 and __import__('os')", "function '__import__' is not allowed (allowed: abs, "
     "coalesce, decimal, float, int, len, lower, max, min, missing, present, round, str, sum, "
     "timestamp, upper) (column 15)"),
    ("__builtins__", "name '__builtins__' is not allowed (names starting with '__' are "
                     "reserved) (column 1)"),
    ("legs.__class__", "name '__class__' is not allowed (names starting with '__' are "
                       "reserved) (column 6)"),
    ("status.lower()", "only calls of named functions are allowed (no method calls: write "
                       "lower(x), not x.lower()) (column 1)"),
    ("(lambda: 1)()", "only calls of named functions are allowed (no method calls: write "
                      "lower(x), not x.lower()) (column 1)"),
    ("lambda: 1", "lambda expressions are not allowed in an expression (column 1)"),
    ("[x for x in legs]", "comprehensions are not allowed in an expression (column 1)"),
    ("sum(x for x in legs)", "generator expressions are not allowed in an expression "
                             "(column 4)"),
    ("f'{price}'", "f-strings are not allowed in an expression (column 1)"),
    ("(x := 1)", "assignment expressions (:=) are not allowed in an expression (column 2)"),
    ("{'a': 1}", "dict literals are not allowed in an expression (column 1)"),
    ("{1, 2}", "set literals are not allowed in an expression (column 1)"),
    ("legs[1:2]", "a subscript must be a constant index or key, e.g. legs[0] or x['key'] "
                  "(column 1)"),
    ("legs[price]", "a subscript must be a constant index or key, e.g. legs[0] or x['key'] "
                    "(column 1)"),
    ("legs[True]", "a subscript must be a constant index or key, e.g. legs[0] or x['key'] "
                   "(column 1)"),
    ("price @ volume", "operator '@' is not allowed (column 1)"),
    ("price | volume", "operator '|' is not allowed (column 1)"),
    ("~price", "operator '~' is not allowed (use 'not') (column 1)"),
    ("price is 1", "'is' and 'is not' are only allowed with None (column 1)"),
    ("sum(legs, start=1)", "function 'sum' takes positional arguments only (column 1)"),
    ("max(*legs)", "function 'max' takes positional arguments only (column 1)"),
    ("abs()", "abs() takes 1 argument, got 0 (column 1)"),
    ("round(1, 2, 3)", "round() takes 1 to 2 arguments, got 3 (column 1)"),
    ("coalesce()", "coalesce() takes 1 or more arguments, got 0 (column 1)"),
    ("b'raw'", "constant b'raw' is not allowed (column 1)"),
    ("price ==", "invalid syntax: invalid syntax (column 9)"),
    ("price = 1", "invalid syntax: invalid syntax (column 7)"),
    ("  price +\n  )", "invalid syntax: unmatched ')' (column 13)"),
    ("", "the expression is empty"),
    ("  \n ", "the expression is empty"),
])
def test_compile_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert str(caught.value) == message


def test_compile_error_attributes() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("price > 0 and open(x)")
    assert (caught.value.message.startswith("function 'open' is not allowed"),
            caught.value.column, caught.value.path) == (True, 15, "")
    assert str(ExpressionError("bad", 3, path="rules[0].check")) == "rules[0].check: bad (column 3)"


def test_a_non_string_expression_is_refused() -> None:
    with pytest.raises(ExpressionError, match="an expression must be a string, got dict"):
        compile_expression({"check": 1})  # type: ignore[arg-type]


def test_names_are_the_top_level_fields_read() -> None:
    expression = compile_expression("abs(sum(legs.volume_mwh) - volume_mwh) <= tol['x'] and "
                                    "present(party.lei)")
    assert expression.names == frozenset({"legs", "volume_mwh", "tol", "party"})
    assert compile_expression("1 + 2").names == frozenset()


def test_a_multi_line_yaml_block_compiles() -> None:
    expression = compile_expression("present(legs)\n  and abs(sum(legs.volume_mwh)\n"
                                    "    - volume_mwh) <= 0.001\n")
    assert expression.evaluate(RECORD) is True
    assert repr(expression).startswith("Expression('present(legs)")


def test_missing_is_a_falsy_singleton_that_survives_pickling() -> None:
    assert not MISSING
    assert repr(MISSING) == "MISSING"
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_the_same_text_compiles_to_the_same_expression_once() -> None:
    assert compile_expression("price > 1") is compile_expression("price > 1")


def test_functions_table_matches_the_documented_whitelist() -> None:
    assert sorted(FUNCTIONS) == ["abs", "coalesce", "decimal", "float", "int", "len", "lower",
                                 "max", "min", "missing", "present", "round", "str", "sum",
                                 "timestamp", "upper"]


def test_simple_evaluation_is_fast() -> None:
    expression = compile_expression("delivery_end > delivery_start")
    record = {"delivery_start": 1, "delivery_end": 2}
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(30_000):
            expression.evaluate(record)
        best = min(best, time.perf_counter() - started)
    assert 30_000 / best > 300_000


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                       st.one_of(st.none(), st.integers(-5, 5), st.floats(-5, 5))))
def test_a_rule_is_not_applicable_exactly_when_an_operand_it_needs_is_absent(
        record: dict) -> None:
    expression = compile_expression("a * b - c / 2 > a if present(c) else b <= a")
    needs_absent_operand = record.get("a") is None or record.get("b") is None
    try:
        result = expression.evaluate(record)
    except NotApplicable:
        assert needs_absent_operand
    else:
        assert not needs_absent_operand
        assert isinstance(result, bool)


# --- vectorised evaluation ---------------------------------------------------------------------

FRAME = pd.DataFrame({
    "price": [40.45, 10.0, None],
    "volume_mwh": [15.0, 2.0, 3.0],
    "status": ["New", None, "cancel"],
    "start": ["2025-10-26T02:30:00+02:00", "2025-03-30T01:00:00Z", None],
    "legs": [[{"v": 1.0}], [{"v": 2.0}, {"v": 3.0}], None],
})


def frame_values(text: str) -> Any:
    result = compile_expression(text).evaluate_frame(FRAME)
    return result.tolist() if isinstance(result, pd.Series) else result


@pytest.mark.parametrize("text, expected", [
    ("price * volume_mwh > 100", [True, False, False]),
    ("present(price) and volume_mwh > 2", [True, False, False]),
    ("present(price) or volume_mwh > 2", [True, True, True]),
    ("not present(status)", [False, True, False]),
    ("status is None", [False, True, False]),
    ("status is not None", [True, False, True]),
    ("missing(price)", [False, False, True]),
    ("lower(status) == 'new'", [True, False, False]),
    ("upper(coalesce(status, 'none'))", ["NEW", "NONE", "CANCEL"]),
    ("coalesce(price, volume_mwh)", [40.45, 10.0, 3.0]),
    ("coalesce(absent, price, 0)", [40.45, 10.0, 0.0]),
    ("abs(-volume_mwh)", [15.0, 2.0, 3.0]),
    ("round(volume_mwh / 7, 2)", [2.14, 0.29, 0.43]),
    ("status in ['New', 'cancel']", [True, False, True]),
    ("status not in ['New']", [False, True, True]),
    ("1 < volume_mwh <= 3", [False, True, True]),
    ("'big' if volume_mwh > 2 else 'small'", ["big", "small", "big"]),
    ("legs[0].v", [1.0, 2.0, None]),
    ("len(status)", [3.0, None, 6.0]),
    ("float(volume_mwh) / 2", [7.5, 1.0, 1.5]),
    ("present(absent)", False),
    ("present(absent) and absent > 1", False),
    ("1 + 2", 3),
])
def test_frame_evaluation(text: str, expected: Any) -> None:
    values = frame_values(text)
    if isinstance(values, list):
        values = [None if isinstance(v, float) and v != v else v for v in values]
    assert values == expected


def test_frame_timestamps_are_aware_utc_and_naive_strings_are_refused() -> None:
    assert frame_values("timestamp(start)")[:2] == [
        pd.Timestamp("2025-10-26T00:30:00Z"), pd.Timestamp("2025-03-30T01:00:00Z")]
    naive = pd.DataFrame({"start": ["2025-10-26T02:30:00"]})
    with pytest.raises(NotApplicable, match="'2025-10-26T02:30:00' has no UTC offset"):
        compile_expression("timestamp(start)").evaluate_frame(naive)


def test_frame_decimal_keeps_money_exact() -> None:
    frame = pd.DataFrame({"price": ["40.45", None], "volume": [15, 2]})
    result = compile_expression("decimal(price) * volume").evaluate_frame(frame)
    assert result[0] == Decimal("606.75")


@pytest.mark.parametrize("text, message", [
    ("sum(legs)", "function 'sum' is not supported on columns (supported: abs, coalesce, "
                  "decimal, float, len, lower, missing, present, round, str, timestamp, upper) "
                  "(column 1)"),
    ("max(price, 0) > 1", "function 'max' is not supported on columns (supported: abs, "
                          "coalesce, decimal, float, len, lower, missing, present, round, str, "
                          "timestamp, upper) (column 1)"),
    ("status in [price]", "list literals on columns may hold constants only (column 11)"),
    ("status in status", "'in' on columns needs a list literal on the right (column 1)"),
])
def test_functions_without_a_vectorised_form_are_refused(text: str, message: str) -> None:
    expression = compile_expression(text)
    with pytest.raises(ExpressionError) as caught:
        expression.check_frame_support()
    assert str(caught.value) == message
    with pytest.raises(ExpressionError):
        expression.evaluate_frame(FRAME)


def test_frame_arithmetic_on_an_absent_column_is_not_applicable() -> None:
    with pytest.raises(NotApplicable) as caught:
        compile_expression("absent * price").evaluate_frame(FRAME)
    assert str(caught.value) == ("absent * price: unsupported operand type(s) for *: '_Missing' "
                                 "and 'float' (columns not in the frame: absent)")


@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50), st.integers(1, 9)),
                min_size=1, max_size=20))
def test_frame_and_record_evaluation_agree(rows: list[tuple[int, int, int]]) -> None:
    text = "(a * b - c) // c > a and not (b in [1, 2, 3]) or abs(a) < c"
    expression = compile_expression(text)
    frame = pd.DataFrame(rows, columns=["a", "b", "c"])
    expected = [bool(expression.evaluate(dict(zip("abc", row)))) for row in rows]
    assert expression.evaluate_frame(frame).tolist() == expected
