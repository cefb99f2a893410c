"""The validation fast path must give exactly jsonschema's verdicts and violations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from etrmflow.builtins.formats import FORMAT_CHECKERS
from etrmflow.builtins.validators import JsonSchemaValidator, build_format_checker, json_pointer
from etrmflow.components import ContractInfo, ValidationContext
from etrmflow.sandbox import is_invalid_trade, trade
from etrmflow.validation.fastpath import EACH, UnreachableFormat, format_paths

CONTRACTS = Path(__file__).parents[1] / "contracts"


def _validator(schema: dict[str, Any]) -> JsonSchemaValidator:
    contract = ContractInfo(name="t", version="1", primary_key=(), schema=schema)
    return JsonSchemaValidator({}, context=ValidationContext(contract=contract, format_checkers=FORMAT_CHECKERS))


def _reference(schema: dict[str, Any], record: Any) -> set[tuple[str, str]]:
    checker = jsonschema.Draft202012Validator(schema, format_checker=build_format_checker(FORMAT_CHECKERS))
    return {(json_pointer(e.absolute_path), str(e.validator)) for e in checker.iter_errors(record)}


def _mutations(record: dict[str, Any]) -> list[Any]:
    """Records broken in ways the sandbox does not break them."""
    out: list[Any] = [dict(record, version="2"), dict(record, buy_sell="X"), dict(record, extra_field=1),
                      {k: v for k, v in record.items() if k != "trade_id"}, dict(record, trade_id="bad id"),
                      dict(record, delivery_point="10YCB-EUROPEU--8"), dict(record, trade_date="2025-02-30"),
                      dict(record, price=None), [record], "not a record", None]
    if record.get("legs"):
        legs = [dict(leg) for leg in record["legs"]]
        legs[0]["delivery_start"] = "2025-01-01T00:00:00"  # naive: breaks format inside an array
        out.append(dict(record, legs=legs))
    return out


def test_trade_contract_formats_are_all_reachable() -> None:
    schema = yaml.safe_load((CONTRACTS / "trade.yml").read_text())["schema"]
    paths = dict(format_paths(schema))
    assert paths[("counterparty_lei",)] == "lei"
    assert paths[("legs", EACH, "delivery_start")] == "date-time"


@pytest.mark.parametrize("contract", ["trade", "settlement"])
def test_same_verdicts_and_violations_as_jsonschema(contract: str) -> None:
    schema = yaml.safe_load((CONTRACTS / f"{contract}.yml").read_text())["schema"]
    validator = _validator(schema)
    records: list[Any] = [trade(i, seed=11) for i in range(3000)]
    records += [broken for record in records[:60] for broken in _mutations(record)]
    verdicts = validator.validate(records)
    invalid = 0
    for record, found in zip(records, verdicts):
        assert {(v.pointer, v.keyword) for v in found} == _reference(schema, record), record
        invalid += bool(found)
    if contract == "trade":
        assert invalid >= sum(1 for i in range(3000) if is_invalid_trade(i, seed=11)) > 0


def test_formats_under_any_of_fall_back_to_callbacks_with_the_same_verdicts() -> None:
    schema = {"type": "object", "properties": {"id": {"anyOf": [{"type": "string", "format": "lei"},
                                                                 {"type": "string", "format": "eic"}]}}}
    with pytest.raises(UnreachableFormat):
        format_paths(schema)
    validator = _validator(schema)
    records = [{"id": "HWUPKR0MPOU8FGXBT394"}, {"id": "10YCZ-CEPS-----N"}, {"id": "HWUPKR0MPOU8FGXBT395"}, {"id": 5}]
    verdicts = [bool(found) for found in validator.validate(records)]
    assert verdicts == [False, False, True, True]  # 5 is no string: both branches fail
    assert [bool(_reference(schema, r)) for r in records] == verdicts
