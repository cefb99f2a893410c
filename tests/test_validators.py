"""The built-in json_schema and rules validators: exact violations for crafted records."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from typing import Any

import jsonschema
import pluggy
import pytest

from etrmflow import hookspecs
from etrmflow.builtins import validators
from etrmflow.builtins.formats import FORMAT_CHECKERS
from etrmflow.builtins.validators import (
    JsonSchemaValidator,
    RulesValidator,
    compile_rule,
    json_pointer,
)
from etrmflow.components import ContractInfo, ValidationContext, Violation
from etrmflow.expr import ExpressionError

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["trade_id", "counterparty_lei", "delivery_start", "delivery_end", "price",
                 "volume_mwh", "currency"],
    "additionalProperties": False,
    "properties": {
        "trade_id": {"type": "string", "pattern": "^[A-Za-z0-9_ -]{1,100}$"},
        "counterparty_lei": {"type": "string", "format": "lei"},
        "delivery_point": {"type": "string", "format": "eic"},
        "delivery_start": {"type": "string", "format": "date-time"},
        "delivery_end": {"type": "string", "format": "date-time"},
        "price": {"type": ["number", "null"]},
        "volume_mwh": {"type": "number", "minimum": 0},
        "notional": {"type": "number"},
        "currency": {"type": "string", "format": "iso4217"},
        "action": {"enum": ["N", "M", "E", "C"]},
        "resolution": {"type": "string", "format": "duration"},
        "odd/key~name": {"type": "integer"},
        "legs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["volume_mwh"],
                "properties": {"volume_mwh": {"type": "number"},
                               "start": {"type": "string", "format": "date-time"}},
            },
        },
    },
}

RULES = (
    {"name": "delivery_order", "check": "delivery_end > delivery_start",
     "message": "delivery must end after it starts"},
    {"name": "legs_sum_to_volume", "when": "present(legs)",
     "check": "abs(sum(legs.volume_mwh) - volume_mwh) <= 0.001"},
    {"name": "notional", "when": "present(notional) and currency != 'GBX'",
     "check": "abs(notional - price * volume_mwh) <= 0.01"},
)

VALID: dict[str, Any] = {
    "trade_id": "T-1", "counterparty_lei": "HWUPKR0MPOU8FGXBT394",
    "delivery_point": "10YCZ-CEPS-----N",
    # 02:30 CEST to 02:15 CET is 45 minutes later as an instant, across the clock change.
    "delivery_start": "2025-10-26T02:30:00+02:00", "delivery_end": "2025-10-26T02:15:00+01:00",
    "price": 40.45, "volume_mwh": 15, "notional": 606.75, "currency": "EUR",
    "legs": [{"volume_mwh": 10}, {"volume_mwh": 5}],
}


def context(schema: Mapping[str, Any] = SCHEMA, rules: tuple = RULES,
            checkers: Mapping[str, Any] = FORMAT_CHECKERS) -> ValidationContext:
    contract = ContractInfo(name="trades", version="1", primary_key=("trade_id",), schema=schema)
    return ValidationContext(contract=contract, format_checkers=checkers, rules=rules)


@pytest.fixture(scope="module")
def schema_validator() -> JsonSchemaValidator:
    return JsonSchemaValidator({}, context=context())


@pytest.fixture(scope="module")
def rules_validator() -> RulesValidator:
    return RulesValidator({}, context=context())


def changed(**fields: Any) -> dict[str, Any]:
    record = copy.deepcopy(VALID)
    for name, value in fields.items():
        if value is DELETE:
            del record[name]
        else:
            record[name] = value
    return record


DELETE = object()


def schema_violation(pointer: str, keyword: str, message: str) -> Violation:
    return Violation(pointer=pointer, keyword=keyword, message=message, validator="json_schema")


def rule_violation(name: str, message: str) -> Violation:
    return Violation(pointer="", keyword=f"rule:{name}", message=message, validator="rules")


ORDER = rule_violation("delivery_order", "delivery must end after it starts")
LEGS = rule_violation("legs_sum_to_volume", "rule 'legs_sum_to_volume' failed: "
                                            "abs(sum(legs.volume_mwh) - volume_mwh) <= 0.001")
NOTIONAL = rule_violation("notional", "rule 'notional' failed: "
                                      "abs(notional - price * volume_mwh) <= 0.01")


@pytest.mark.parametrize("record, schema_expected, rules_expected", [
    pytest.param(VALID, [], [], id="valid across the DST change"),
    pytest.param(changed(trade_id=DELETE), [
        schema_violation("", "required", "'trade_id' is a required property")], [],
        id="missing required field"),
    pytest.param(changed(counterparty_lei="HWUPKR0MPOU8FGXBT395"), [
        schema_violation("/counterparty_lei", "format", "'HWUPKR0MPOU8FGXBT395' is not a 'lei'")],
        [], id="bad LEI"),
    pytest.param(changed(delivery_point="10YCB-EUROPEU--8"), [
        schema_violation("/delivery_point", "format", "'10YCB-EUROPEU--8' is not a 'eic'")], [],
        id="bad EIC"),
    pytest.param(changed(delivery_start="2025-10-26T02:30:00"), [
        schema_violation("/delivery_start", "format",
                         "'2025-10-26T02:30:00' is not a 'date-time'")], [],
        id="naive date-time: reported by the schema, the date rule is not applicable"),
    pytest.param(changed(delivery_end="2025-10-26T01:15:00+01:00"), [], [ORDER],
        id="end before start as instants"),
    pytest.param(changed(delivery_end="2025-10-26T02:30:00+02:00"), [], [ORDER],
        id="end equal to start"),
    pytest.param(changed(legs=[{"volume_mwh": 10}, {"volume_mwh": 4}]), [], [LEGS],
        id="legs not summing"),
    pytest.param(changed(legs=DELETE), [], [], id="no legs: the legs rule does not apply"),
    pytest.param(changed(legs=[{"volume_mwh": 15}, {"start": "x"}]), [
        schema_violation("/legs/1", "required", "'volume_mwh' is a required property"),
        schema_violation("/legs/1/start", "format", "'x' is not a 'date-time'")], [],
        id="leg without volume is skipped by the projection"),
    pytest.param(changed(notional=600.0), [], [NOTIONAL], id="notional off"),
    pytest.param(changed(notional=600.0, currency="GBX"), [], [],
        id="when false skips the rule"),
    pytest.param(changed(price=None), [], [], id="null price: the notional rule cannot be judged"),
    pytest.param(changed(price="40.45"), [
        schema_violation("/price", "type", "'40.45' is not of type 'number', 'null'")], [],
        id="price as a string: not applicable, the schema reports it"),
    pytest.param(changed(delivery_end="2025-10-26T01:00:00+01:00", legs=[{"volume_mwh": 1}],
                         notional=1.0), [], [ORDER, LEGS, NOTIONAL],
        id="every rule broken, in contract order"),
    pytest.param(changed(currency="GBX", volume_mwh=-1, action="X", extra=1, resolution="15M",
                         **{"odd/key~name": 1.5}), [
        schema_violation("", "additionalProperties",
                         "Additional properties are not allowed ('extra' was unexpected)"),
        schema_violation("/action", "enum", "'X' is not one of ['N', 'M', 'E', 'C']"),
        schema_violation("/odd~1key~0name", "type", "1.5 is not of type 'integer'"),
        schema_violation("/resolution", "format", "'15M' is not a 'duration'"),
        schema_violation("/volume_mwh", "minimum", "-1 is less than the minimum of 0"),
    ], [LEGS], id="several errors sorted by pointer then keyword"),
    pytest.param(["not", "an", "object"], [
        schema_violation("", "type", "['not', 'an', 'object'] is not of type 'object'")], [],
        id="not an object"),
])
def test_exact_violations(schema_validator: JsonSchemaValidator, rules_validator: RulesValidator,
                          record: Any, schema_expected: list, rules_expected: list) -> None:
    assert schema_validator.validate([record]) == [schema_expected]
    assert rules_validator.validate([record]) == [rules_expected]


def test_a_batch_gets_one_list_per_record_in_order(schema_validator: JsonSchemaValidator,
                                                   rules_validator: RulesValidator) -> None:
    batch = [VALID, changed(trade_id=DELETE), None, VALID]
    assert [len(v) for v in schema_validator.validate(batch)] == [0, 1, 1, 0]
    assert rules_validator.validate(batch) == [[], [], [], []]
    assert schema_validator.validate([]) == []


def test_rules_see_instants_but_the_record_stays_as_sent(rules_validator: RulesValidator) -> None:
    record = changed()
    rules_validator.validate([record])
    assert record == VALID


def test_without_date_time_format_the_strings_compare_as_text() -> None:
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["delivery_start"] = {"type": "string"}
    schema["properties"]["delivery_end"] = {"type": "string"}
    # As text "2025-10-26T02:15..." < "2025-10-26T02:30...": the DST-crossing period looks
    # reversed, which is why rules parse declared date-times first.
    assert RulesValidator({}, context=context(schema=schema)).validate([VALID]) == [[ORDER]]


def test_a_when_reading_a_missing_field_skips_the_rule() -> None:
    rules = ({"name": "cap", "when": "cap_applies", "check": "price < 10"},)
    validator = RulesValidator({}, context=context(rules=rules))
    assert validator.validate([VALID, changed(cap_applies=True), changed(cap_applies=0)]) == [
        [], [rule_violation("cap", "rule 'cap' failed: price < 10")], []]


def test_a_check_that_evaluates_to_missing_is_a_violation() -> None:
    rules = ({"name": "needs_legs", "check": "legs"},)
    validator = RulesValidator({}, context=context(rules=rules))
    assert validator.validate([changed(legs=DELETE), changed(legs=[]), VALID]) == [
        [rule_violation("needs_legs", "rule 'needs_legs' failed: legs")],
        [rule_violation("needs_legs", "rule 'needs_legs' failed: legs")], []]


def test_no_rules_means_no_violations() -> None:
    assert RulesValidator({}, context=context(rules=())).validate([VALID, 5]) == [[], []]


@pytest.mark.parametrize("rules, message", [
    (({"name": "a", "check": "price > 0"}, {"name": "b", "check": "open('x')"}),
     "rules[1].check: rule 'b' check: function 'open' is not allowed (allowed: abs, coalesce, "
     "decimal, float, int, len, lower, max, min, missing, present, round, str, sum, timestamp, "
     "upper) (column 1)"),
    (({"name": "w", "when": "price >", "check": "price > 0"},),
     "rules[0].when: rule 'w' when: invalid syntax: invalid syntax (column 8)"),
    (({"check": "price > 0"},), "rules[0]: a rule needs a 'name'"),
    (({"name": "c"},), "rules[0]: rule 'c' needs a 'check' expression"),
    (("price > 0",), "rules[0]: a rule needs a 'name'"),
])
def test_rule_compile_errors_name_the_rule_and_its_index(rules: tuple, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        RulesValidator({}, context=context(rules=rules))
    assert str(caught.value) == message


def test_compile_rule_exposes_the_path_and_column() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_rule(4, {"name": "n", "check": "price > 0 and x.__class__"})
    assert (caught.value.path, caught.value.column) == ("rules[4].check", 17)
    rule = compile_rule(0, RULES[1])
    assert (rule.name, rule.names) == ("legs_sum_to_volume", frozenset({"legs", "volume_mwh"}))


def test_messages_are_truncated_to_300_characters() -> None:
    schema = {"type": "object", "properties": {"x": {"enum": ["a"]}}}
    validator = JsonSchemaValidator({}, context=context(schema=schema))
    (violation,) = validator.validate([{"x": "y" * 1000}])[0]
    assert len(violation.message) == 300
    assert violation.message == "'" + "y" * 296 + "..."
    rule = compile_rule(0, {"name": "long", "check": "x", "message": "m" * 400})
    assert rule.violation.message == "m" * 297 + "..."


def test_plugin_checkers_replace_builtin_formats_and_only_see_strings() -> None:
    seen: list[Any] = []

    def only_upper(value: Any) -> bool:
        seen.append(value)
        if value == "boom":
            raise ValueError("not even close")
        return value.isupper()

    schema = {"type": "array", "items": {"format": "date-time"}}
    validator = JsonSchemaValidator({}, context=context(schema=schema,
                                                       checkers={"date-time": only_upper}))
    result = validator.validate([["ABC", 5, None], ["2025-01-01t00:00:00z"], ["boom"]])
    assert result == [[], [schema_violation("/0", "format",
                                            "'2025-01-01t00:00:00z' is not a 'date-time'")],
                      [schema_violation("/0", "format", "'boom' is not a 'date-time'")]]
    assert all(isinstance(value, str) for value in seen)


def test_json_pointer_escapes_per_rfc_6901() -> None:
    assert json_pointer([]) == ""
    assert json_pointer(["legs", 0, "a/b", "c~d"]) == "/legs/0/a~1b/c~0d"


def test_options_and_registration() -> None:
    no_options = {"type": "object", "additionalProperties": False, "properties": {}}
    assert (JsonSchemaValidator.type_name, JsonSchemaValidator.options_schema) == (
        "json_schema", no_options)
    assert (RulesValidator.type_name, RulesValidator.options_schema) == ("rules", no_options)
    assert JsonSchemaValidator.summary() == ("Checks each record against the contract's JSON "
                                             "Schema (draft 2020-12), formats included.")
    assert RulesValidator.summary() == ("Checks the contract's cross-field rules, written in "
                                        "etrmflow's expression language.")
    manager = pluggy.PluginManager("etrmflow")
    manager.add_hookspecs(hookspecs)
    manager.register(validators, name="etrmflow.builtins.validators")
    assert manager.hook.etrmflow_validator_types() == [[JsonSchemaValidator, RulesValidator]]


def test_an_invalid_contract_schema_is_refused_at_construction() -> None:
    with pytest.raises(jsonschema.SchemaError):
        JsonSchemaValidator({}, context=context(schema={"type": "no-such-type"}))


# --- agreement with plain jsonschema on generated records --------------------------------------

BREAKAGES = [
    lambda r, rng: r.pop(rng.choice(SCHEMA["required"])),
    lambda r, rng: r.update(counterparty_lei=rng.choice(["HWUPKR0MPOU8FGXBT395", "x", 7])),
    lambda r, rng: r.update(delivery_point=rng.choice(["10YCB-EUROPEU--8", "", None])),
    lambda r, rng: r.update(delivery_start=rng.choice(["2025-10-26T02:30:00", "2025-10-26",
                                                       "2025-02-30T00:00:00Z", 20251026])),
    lambda r, rng: r.update(price=rng.choice(["40.45", True, [1]])),
    lambda r, rng: r.update(volume_mwh=rng.choice([-0.5, None, "15"])),
    lambda r, rng: r.update(currency=rng.choice(["XYZ", "eur", "EUX", "GBP"])),
    lambda r, rng: r.update(action=rng.choice(["N", "Z", 1])),
    lambda r, rng: r.update(resolution=rng.choice(["PT15M", "P", "15M"])),
    lambda r, rng: r.update({"odd/key~name": rng.choice([1, 1.5, "1"]), "unexpected": 1}),
    lambda r, rng: r["legs"].append(rng.choice([{"volume_mwh": "1"}, {}, 5,
                                                {"volume_mwh": 1, "start": "2025-01-01T00:00"}])),
    lambda r, rng: r.update(trade_id=rng.choice(["bad!id", "", "x" * 101, "OK_1"])),
]


def generated_records(count: int, seed: int = 20251026) -> list[Any]:
    rng = random.Random(seed)
    records: list[Any] = []
    for index in range(count):
        if index % 97 == 0:
            records.append(rng.choice([None, "text", 5, [VALID]]))
            continue
        record = copy.deepcopy(VALID)
        record["trade_id"] = f"T-{index}"
        for breakage in rng.sample(BREAKAGES, k=rng.choice([0, 0, 1, 1, 2, 3, 5])):
            breakage(record, rng)
        records.append(record)
    return records


def plain_jsonschema_errors(records: list[Any]) -> list[set[tuple[str, str]]]:
    format_checker = jsonschema.FormatChecker()
    for name, check in FORMAT_CHECKERS.items():
        format_checker.checks(name, raises=(ValueError,))(check)
    plain = jsonschema.Draft202012Validator(SCHEMA, format_checker=format_checker)
    return [{("".join("/" + str(p).replace("~", "~0").replace("/", "~1")
                      for p in error.absolute_path), error.validator)
             for error in plain.iter_errors(record)} for record in records]


def test_same_errors_as_plain_jsonschema_on_2000_generated_records(
        schema_validator: JsonSchemaValidator) -> None:
    records = generated_records(2000)
    ours = [{(v.pointer, v.keyword) for v in found} for found in schema_validator.validate(records)]
    expected = plain_jsonschema_errors(records)
    assert ours == expected
    # The generator must produce both kinds, or the comparison proves little.
    assert 300 < sum(1 for errors in expected if not errors) < 1700
    assert {key for errors in expected for _, key in errors} == {
        "additionalProperties", "enum", "format", "minimum", "pattern", "required", "type"}
