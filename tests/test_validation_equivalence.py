"""The fast validators give exactly the reference's verdicts and violations.

The references are the straightforward ones: plain ``jsonschema`` (Draft 2020-12, the same
format checkers) with one keyword function added, ``x-etrmflow-decimal``'s; and the rules'
per-record evaluation with the expression language's closures (``RulesValidator.violations``).

1. The sample: the benchmark's 200,000 sandbox trades (benchmarks/bench_validation.py, same seed;
   5 % broken by the sandbox) plus crafted mutations of the first 100. The reference costs ~150 µs
   a record, so it runs in two forked processes (~20 s on an idle 2-core machine). Every record
   must get the same violations, messages included.
2. Each mechanism of the fast path, differentially, on generated input: jsonschema-rs on the
   verified keywords, plain patterns, format accelerators, the rules' numpy form and the
   instants it compares.
"""

from __future__ import annotations

import copy
import multiprocessing
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etrmflow.builtins.formats import FORMAT_CHECKERS
from etrmflow.builtins.validators import JsonSchemaValidator, RulesValidator
from etrmflow.components import ContractInfo, ValidationContext
from etrmflow.sandbox import is_invalid_trade, trade
from etrmflow.validation import rules_batch
from etrmflow.validation.accelerators import ACCELERATORS
from etrmflow.validation.instants import NOT_AN_INSTANT, Instants, microseconds
from etrmflow.validation.rust_schema import plain_pattern

CONTRACT = yaml.safe_load((Path(__file__).parents[1] / "contracts" / "trade.yml").read_text(encoding="utf-8"))
SAMPLE, SEED, BATCH = 200_000, 7, 1000  # the benchmark's sample
Verdict = tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]


def validators(schema: dict[str, Any] = CONTRACT["schema"],
               rules: tuple[dict[str, Any], ...] = tuple(CONTRACT["rules"])) -> tuple[JsonSchemaValidator, RulesValidator]:
    info = ContractInfo(name="t", version="1", primary_key=(), schema=schema)
    context = ValidationContext(contract=info, format_checkers=FORMAT_CHECKERS, rules=rules)
    return JsonSchemaValidator({}, context=context), RulesValidator({}, context=context)


def fast(records: list[Any], schema: JsonSchemaValidator, rules: RulesValidator) -> list[Verdict]:
    out: list[Verdict] = []
    for start in range(0, len(records), BATCH):
        chunk = records[start:start + BATCH]
        for found, broken in zip(schema.validate(chunk), rules.validate(chunk)):
            out.append((tuple((v.pointer, v.keyword, v.message) for v in found),
                        tuple(v.keyword for v in broken)))
    return out


def reference(records: list[Any], schema: JsonSchemaValidator, rules: RulesValidator) -> list[Verdict]:
    return [(tuple((v.pointer, v.keyword, v.message) for v in schema.violations(record)),
             tuple(v.keyword for v in rules.violations(record))) for record in records]


def _reference_of_trades(bounds: tuple[int, int]) -> list[Verdict]:
    return reference([trade(i, SEED) for i in range(*bounds)], *validators())


def mutations(record: dict[str, Any]) -> Iterator[Any]:
    """Records broken (or bent) in ways the sandbox does not break them."""
    changes: list[dict[str, Any]] = [
        {"version": "2"}, {"version": 1.0}, {"version": 1.5}, {"version": 2 ** 70}, {"buy_sell": "X"},
        {"extra_field": 1}, {"trade_id": "bad id"}, {"trade_id": record["trade_id"] + "\n"},
        {"trade_id": "ACME-T-٠٠٠١"}, {"trade_id": "\ud800"}, {"delivery_point": "10YCB-EUROPEU--8"},
        {"trade_date": "2025-02-30"}, {"trade_date": "2024-02-29"}, {"price": None}, {"price": "40.45"},
        {"price": True}, {"price": 40}, {"price": 40.455}, {"price": 1e16}, {"price": -0.0},
        {"notional": 12345678901234.567}, {"notional": record["notional"] + 0.011}, {"volume_mwh": 0},
        {"volume_mwh": 15}, {"currency": "eur"}, {"currency": "GBX"}, {"counterparty_lei": 7},
        {"delivery_start": record["delivery_start"][:19]}, {"delivery_start": "2024-02-29T00:00:00+01:00"},
        {"delivery_start": "2025-02-29T00:00:00+01:00"}, {"delivery_end": record["delivery_start"]},
        {"delivery_start": record["delivery_start"].replace("T", "t")}, {"delivery_start": 5},
        {"delivery_end": record["delivery_end"][:19] + ".5" + record["delivery_end"][19:]},
        {"updated_at": " " + record["updated_at"]}, {"legs": []}, {"legs": {"volume_mwh": 1.0}},
        {1: "a key that is no string"},
    ]
    for change in changes:
        yield {**record, **change}
    yield {k: v for k, v in record.items() if k not in ("trade_id", "price")}
    yield {k: v for k, v in record.items() if k != "delivery_end"}
    yield from ([record], "not a record", None, 5)
    legs = record.get("legs")
    if legs:
        for change in ({"delivery_start": legs[0]["delivery_start"][:19]}, {"volume_mwh": 5},
                       {"volume_mwh": "5"}, {"leg_id": "x"}, {"note": 1}, {"price": 1.234}):
            bent = copy.deepcopy(legs)
            bent[0].update(change)
            yield {**record, "legs": bent}
        yield {**record, "legs": [*copy.deepcopy(legs[:-1]), 7]}
        yield {**record, "legs": [{k: v for k, v in legs[0].items() if k != "volume_mwh"}, *legs[1:]]}


def test_the_trade_contract_runs_entirely_on_the_fast_path() -> None:
    schema, rules = validators()
    assert (schema._batch.fast, schema._batch.unverified) == (True, set())
    assert rules._batch.vectorised == ["delivery_period_positive", "legs_sum_to_total",
                                       "notional_is_price_times_volume"]


def test_same_violations_as_the_reference_on_the_benchmark_sample_and_mutations() -> None:
    halves = [(0, SAMPLE // 2), (SAMPLE // 2, SAMPLE)]
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        expected_parts = pool.map(_reference_of_trades, halves)
        records = [trade(i, SEED) for i in range(SAMPLE)]
        found = fast(records, *validators())
        expected = [verdict for part in expected_parts for verdict in part]
    assert len(found) == len(expected) == SAMPLE
    assert [i for i, (a, b) in enumerate(zip(found, expected)) if a != b] == []
    invalid = {i for i, verdict in enumerate(found) if verdict != ((), ())}
    assert invalid == {i for i in range(SAMPLE) if is_invalid_trade(i, SEED)}

    bent = [m for record in records[:100] for m in mutations(record)]
    expected = reference(bent, *validators())
    assert fast(bent, *validators()) == expected
    keywords = {k for schema_found, _ in expected for _, k, _ in schema_found}
    assert {"x-etrmflow-decimal", "format", "pattern", "required", "type", "enum",
            "additionalProperties", "minItems", "exclusiveMinimum"} <= keywords


# --- jsonschema-rs on the verified keywords, differentially -----------------------------------------

KEYS = ["a", "b", "c"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "a", "EUR", "2025-03-30T00:00:00+01:00", "2024-02-29", "HWUPKR0MPOU8FGXBT394",
                     "10YCZ-CEPS-----N", "x\n", 40.45, 40.455, 1.0, 2 ** 53 + 1, -0.0]),
    st.text(max_size=4))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)), max_leaves=8)
TYPES = ["integer", "number", "string", "array", "object", "boolean", "null"]
leaves = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)),
    st.builds(lambda v: {"enum": v}, st.lists(json_values, min_size=1, max_size=3)),
    st.builds(lambda v: {"const": v}, json_values),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
              st.integers(-5, 5) | st.floats(-1e6, 1e6) | st.just(2 ** 63)),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minLength", "maxLength", "minItems", "maxItems",
                                                    "minProperties", "maxProperties"]), st.integers(0, 3)),
    st.builds(lambda r: {"required": r}, st.lists(st.sampled_from(KEYS), unique=True, max_size=3)),
    st.builds(lambda f: {"format": f}, st.sampled_from(["date-time", "date", "lei", "eic", "iso4217", "email"])),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(["^[a-z]+$", "^[A-Z0-9-]{2,}$", "a|b", r"^\d+$", "x$", "(?i)^a"])),
    st.builds(lambda s: {"x-etrmflow-decimal": {"scale": s}}, st.integers(0, 3)),
    st.just({"anyOf": [{"type": "string"}, {"minimum": 0}]}), st.just({"multipleOf": 0.1}),
    st.just({"$ref": "#/$defs/d"}),
)
schemas = st.recursive(leaves, lambda inner: st.one_of(
    st.builds(lambda p: {"properties": p}, st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    st.builds(lambda p, extra: {"properties": p, "additionalProperties": extra},
              st.dictionaries(st.sampled_from(KEYS[:2]), inner, max_size=2), st.booleans() | inner),
    st.builds(lambda item: {"items": item}, inner),
    st.builds(lambda a, b: {**a, **b}, inner, inner),
    st.builds(lambda parts: {"allOf": parts}, st.lists(inner, min_size=1, max_size=2)),
), max_leaves=6)
rooted = st.builds(lambda defined, schema: {"$defs": {"d": defined}, "allOf": [schema]},
                   leaves.filter(lambda leaf: "$ref" not in leaf), schemas)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(rooted, st.lists(json_values, min_size=1, max_size=8))
def test_schema_verdicts_match_jsonschema_on_generated_schemas_and_values(schema: dict[str, Any],
                                                                         values: list[Any]) -> None:
    validator = JsonSchemaValidator({}, context=ValidationContext(
        contract=ContractInfo(name="g", version="1", primary_key=(), schema=schema), format_checkers=FORMAT_CHECKERS))
    assert validator.validate(values) == [validator.violations(value) for value in values]


# --- plain patterns and accelerators: jsonschema-rs may be stricter, never more lenient -----------

plain_atoms = st.sampled_from(["a", "b", "[a-c]", "[^a]", ".", "-", r"\.", "[0-9]", "(?:ab|c)", "(a|)", "x"])
plain_patterns = st.builds(lambda anchor_start, atoms, quantifiers, anchor_end: anchor_start + "".join(
    a + q for a, q in zip(atoms, quantifiers)) + anchor_end, st.sampled_from(["", "^"]),
    st.lists(plain_atoms, min_size=1, max_size=4), st.lists(st.sampled_from(["", "*", "+", "?", "{1,2}", "*?"]),
                                                            min_size=4, max_size=4), st.sampled_from(["", "$"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_patterns, st.lists(st.text(alphabet="abcx.-0\n\r\u2028é", max_size=6), min_size=1, max_size=10))
def test_a_plain_pattern_is_never_more_lenient_in_rust(pattern: str, texts: list[str]) -> None:
    assert plain_pattern(pattern)
    rust = jsonschema_rs.validator_for({"pattern": pattern}, pattern_options=jsonschema_rs.RegexOptions())
    for text in texts:
        if rust.is_valid(text):
            assert re.search(pattern, text), (pattern, text)


def _near(text: str) -> st.SearchStrategy[str]:
    return st.builds(lambda i, c: text[:i] + c + text[i + 1:], st.integers(0, len(text)),
                     st.sampled_from(list("0123456789-:+TtZz .,")))


@pytest.mark.parametrize("name", sorted(ACCELERATORS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_accelerator_accepts_only_valid_values(name: str, data: st.DataObject) -> None:
    accelerator, check = ACCELERATORS[name], FORMAT_CHECKERS[name]
    seed = data.draw(st.from_regex(accelerator["pattern"], fullmatch=True))
    rust = jsonschema_rs.validator_for(accelerator, pattern_options=jsonschema_rs.RegexOptions())
    for text in (seed, data.draw(_near(seed)), data.draw(_near(seed))):
        if rust.is_valid(text):
            assert check(text), (name, text)


# --- the rules' numpy form against the closures ---------------------------------------------------

RULES = (
    {"name": "order", "check": "delivery_end > delivery_start"},
    {"name": "legs", "when": "present(legs)", "check": "abs(sum(legs.volume_mwh) - volume_mwh) <= 0.001"},
    {"name": "notional", "when": "present(notional) and currency != 'GBX'",
     "check": "abs(notional - price * volume_mwh) <= 0.01"},
    {"name": "ratio", "check": "not (notional / volume_mwh < -1e6 or price >= 1e4) and -price < 5000"},
    {"name": "chain", "when": "missing(legs) or str(currency) == 'EUR'", "check": "0 <= volume_mwh < notional + 1"},
    {"name": "window", "check": "delivery_start <= delivery_end != delivery_start"},
    {"name": "flagged", "when": "currency and price > 0", "check": "volume_mwh"},
    {"name": "not_number", "check": "not -price <= volume_mwh / 2 - 1"},
)
field_values = st.one_of(st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)), st.just(0.0), st.just(-0.0),
                         st.integers(-3, 3), st.none(), st.booleans(), st.sampled_from(["EUR", "GBX", "x"]))
instants = st.sampled_from(["2025-10-26T02:30:00+02:00", "2025-10-26T02:15:00+01:00", "2025-10-26T00:30:00Z",
                            "2025-10-26T02:30:00", "2024-02-29T00:00:00+00:00", "2025-02-29T00:00:00Z",
                            "2025-10-26 02:30+02", "not a time", 5])
legs = st.lists(st.one_of(st.fixed_dictionaries({"volume_mwh": field_values}), st.just({}), st.just(3)), max_size=4)
record = st.dictionaries(st.sampled_from(["price", "volume_mwh", "notional", "currency"]), field_values).flatmap(
    lambda base: st.fixed_dictionaries({}, optional={"delivery_start": instants, "delivery_end": instants,
                                                     "legs": legs | field_values}).map(lambda extra: {**base, **extra}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record | st.just([1]) | st.none(), min_size=1, max_size=60))
def test_rule_verdicts_match_the_closures_on_generated_records(records: list[Any]) -> None:
    schema = {"properties": {"delivery_start": {"format": "date-time"}, "delivery_end": {"format": "date-time"}}}
    _, rules = validators(schema, RULES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rules_batch, "SMALL_BATCH", 0)  # the numpy forms, however few the records
        assert rules.validate(records) == [rules.violations(r) for r in records]


date_times = st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,3})?)?"
                           r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?", fullmatch=True)
plausible = st.builds(lambda y, mo, d, h, mi, s, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{off}",
                      st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 24),
                      st.integers(0, 60), st.integers(0, 60),
                      st.sampled_from(["Z", "+01:00", "-05:30", "+23:59", "+24:00", "+05:60", "-00:00", ""]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(date_times | plausible, min_size=1, max_size=40))
def test_rule_instants_are_exactly_what_the_parser_reads(texts: list[str]) -> None:
    instants = Instants()
    assert instants.parse([*texts, None, 5]).tolist() == [*map(microseconds, texts), NOT_AN_INSTANT, NOT_AN_INSTANT]
    assert instants.parse(texts).tolist() == [microseconds(text) for text in texts]  # memoised now
