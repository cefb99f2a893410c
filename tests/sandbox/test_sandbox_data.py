"""The sandbox dataset: deterministic, lazy, realistic, and exactly as (in)valid as it claims.

Contracts are checked with plain jsonschema and local format checkers written here, and their
rules in plain Python, so these tests do not depend on the validators they will later feed.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import yaml

from etrmflow.sandbox import data
from etrmflow.sandbox.data import (
    SETTLEMENT_DEFECTS,
    TRADE_DEFECTS,
    is_invalid_settlement,
    is_invalid_trade,
    settlement,
    trade,
)
from etrmflow.sandbox.identifiers import corrupt_lei, is_valid_eic, is_valid_lei, lei_pool
from etrmflow.sandbox.localtime import DAY, epoch_day, local_iso, utc_iso
from etrmflow.sandbox.products import PRODUCTS

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
ZONE_OF_PRODUCT = {p.code: p.zone for p in PRODUCTS}

# --- local format checkers (the real ones live in etrmflow/energy.py) ---------------------------

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_EIC = _ALNUM + "-"
_CURRENCIES = {"EUR", "GBP", "USD", "CHF", "CZK", "DKK", "HUF", "NOK", "PLN", "RON", "SEK", "BGN",
               "GBX", "EUX"}
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _lei(value: str) -> bool:
    if not re.fullmatch(r"[A-Z0-9]{18}[0-9]{2}", value):
        return False
    return int("".join(str(_ALNUM.index(c)) for c in value)) % 97 == 1


def _eic(value: str) -> bool:
    if len(value) != 16 or any(c not in _EIC for c in value) or value[15] == "-":
        return False
    total = sum((16 - i) * _EIC.index(c) for i, c in enumerate(value[:15]))
    return _EIC[36 - (total - 1) % 37] == value[15]


def _date_time(value: str) -> bool:
    if not _DATE_TIME.match(value):
        return False
    dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    checker.checks("lei")(_lei)
    checker.checks("eic")(_eic)
    checker.checks("iso4217")(lambda v: v in _CURRENCIES)
    checker.checks("date-time", raises=ValueError)(_date_time)
    return checker


# --- the contracts' rules, in plain Python --------------------------------------------------------

def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _delivery_period_positive(r: dict[str, Any]) -> bool:
    start, end = _instant(r["delivery_start"]), _instant(r["delivery_end"])
    if start.tzinfo is None or end.tzinfo is None:
        return True  # not comparable as instants; the date-time format reports it
    return end > start


def _legs_sum_to_total(r: dict[str, Any]) -> bool:
    return "legs" not in r or abs(sum(leg["volume_mwh"] for leg in r["legs"]) - r["volume_mwh"]) <= 0.001


def _notional(r: dict[str, Any]) -> bool:
    if not {"price", "volume_mwh", "notional"} <= r.keys():
        return True
    return abs(r["notional"] - r["price"] * r["volume_mwh"]) <= 0.01


RULES = {
    "trade": {"delivery_period_positive": _delivery_period_positive, "legs_sum_to_total": _legs_sum_to_total,
              "notional_is_price_times_volume": _notional},
    "settlement": {"settled_after_delivery_month_starts":
                   lambda r: str(r["settlement_date"]) > str(r["delivery_month"])},
}


def load_contract(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONTRACTS / f"{name}.yml").read_text())


@pytest.fixture(scope="module", params=["trade", "settlement"])
def contract(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_contract(request.param)


def violations(contract: dict[str, Any], record: dict[str, Any]) -> set[str]:
    """Schema keywords and rule names the record breaks."""
    validator = jsonschema.Draft202012Validator(contract["schema"], format_checker=format_checker())
    found = {error.validator for error in validator.iter_errors(record)}
    found |= {name for name, rule in RULES[contract["name"]].items() if not rule(record)}
    return found


# --- contracts ----------------------------------------------------------------------------------

def test_contract_header_and_schema_are_well_formed(contract: dict[str, Any]) -> None:
    assert contract["version"] == "1.0.0"
    assert contract["primary_key"] == {"trade": ["trade_id", "version"], "settlement": ["settlement_id"]}[contract["name"]]
    jsonschema.Draft202012Validator.check_schema(contract["schema"])
    assert {rule["name"] for rule in contract["rules"]} == set(RULES[contract["name"]])


def test_contract_examples_pass_and_fail_as_declared(contract: dict[str, Any]) -> None:
    examples = contract["examples"]
    assert 2 <= len(examples["valid"]) <= 3 and 3 <= len(examples["invalid"]) <= 4
    for record in examples["valid"]:
        assert violations(contract, record) == set()
    for case in examples["invalid"]:
        assert violations(contract, case["record"]) == set(case["violates"])


TRADE_DEFECT_VIOLATIONS = {
    "bad_lei_check_digits": {"format"},
    "delivery_end_before_start": {"delivery_period_positive"},
    "missing_price": {"required"},
    "unknown_currency": {"format"},
    "negative_volume": {"exclusiveMinimum"},
    "legs_not_summing": {"legs_sum_to_total"},
    "naive_timestamp": {"format"},
}
SETTLEMENT_DEFECT_VIOLATIONS = {
    "bad_lei_check_digits": {"format"},
    "unknown_currency": {"format"},
    "missing_amount": {"required"},
    "unknown_status": {"enum"},
    "settled_before_delivery": {"settled_after_delivery_month_starts"},
    "bad_date_format": {"format", "settled_after_delivery_month_starts"},
}


@pytest.mark.parametrize("seed", [7, 3])
def test_every_trade_is_exactly_as_valid_as_declared(seed: int) -> None:
    contract = load_contract("trade")
    seen: Counter[str] = Counter()
    for i in range(1400):
        defect = is_invalid_trade(i, seed)
        expected = TRADE_DEFECT_VIOLATIONS[defect] if defect else set()
        assert violations(contract, trade(i, seed)) == expected, (i, defect)
        seen[defect or "valid"] += 1
    assert seen == {"valid": 1330, **{name: 10 for name in TRADE_DEFECTS}}


def test_every_settlement_is_exactly_as_valid_as_declared() -> None:
    contract = load_contract("settlement")
    seen: Counter[str] = Counter()
    for i in range(600):
        defect = is_invalid_settlement(i, 7)
        expected = SETTLEMENT_DEFECT_VIOLATIONS[defect] if defect else set()
        assert violations(contract, settlement(i, 7)) == expected, (i, defect)
        seen[defect or "valid"] += 1
    assert seen == {"valid": 576, **{name: 4 for name in SETTLEMENT_DEFECTS}}


def test_first_records_are_valid_and_the_default_dataset_has_every_trade_defect() -> None:
    assert is_invalid_trade(0, 7) is None and is_invalid_settlement(0, 7) is None
    assert {is_invalid_trade(i, 7) for i in range(250)} == {None, *TRADE_DEFECTS}
    assert sum(is_invalid_trade(i, 7) is not None for i in range(250)) == 12


# --- determinism and laziness -------------------------------------------------------------------

def test_same_index_and_seed_give_the_same_record_and_seeds_differ() -> None:
    assert trade(41, 7) == trade(41, 7) and settlement(41, 7) == settlement(41, 7)
    assert trade(41, 7) is not trade(41, 7)  # callers may mutate their copy
    assert trade(41, 7) != trade(41, 8) and settlement(41, 7) != settlement(41, 8)
    assert trade(0, 7)["trade_id"] == "ACME-T-0000001" and settlement(0, 7)["settlement_id"] == "ACME-S-0000001"


def test_a_record_deep_in_a_million_is_made_without_the_others() -> None:
    started = time.perf_counter()
    record = trade(999_999, 7)
    assert record["trade_id"] == "ACME-T-1000000" and record == trade(999_999, 7)
    assert time.perf_counter() - started < 0.05


def test_generation_is_fast() -> None:
    trade(0, 11)  # warm the per-seed LEI pool
    started = time.perf_counter()
    for i in range(20_000):
        trade(i, 11)
    per_record = (time.perf_counter() - started) / 20_000
    assert per_record < 30e-6  # about 8 us on a 2-core CI machine; generous for noise


# --- realism ------------------------------------------------------------------------------------

def _valid_trades(count: int, seed: int = 7) -> list[dict[str, Any]]:
    return [trade(i, seed) for i in range(count) if is_invalid_trade(i, seed) is None]


def test_delivery_times_carry_the_zones_true_offset() -> None:
    for record in _valid_trades(1500):
        zone = ZoneInfo(ZONE_OF_PRODUCT[record["product_code"]])
        for key in ("delivery_start", "delivery_end"):
            stamp = dt.datetime.fromisoformat(record[key])
            assert stamp.utcoffset() == stamp.astimezone(zone).utcoffset(), (record["trade_id"], key)


def test_clock_change_days_with_23_and_25_hours_occur_in_the_default_dataset() -> None:
    records = _valid_trades(250)
    hours = Counter((_instant(r["delivery_end"]) - _instant(r["delivery_start"])) / dt.timedelta(hours=1)
                    for r in records)
    assert hours[23.0] >= 3 and hours[25.0] >= 3
    near = [r for r in records if r["delivery_start"][:10] in
            {"2025-03-28", "2025-03-29", "2025-03-30", "2025-03-31",
             "2025-10-24", "2025-10-25", "2025-10-26", "2025-10-27"}]
    assert len(near) >= len(records) // 6


def test_gas_days_run_from_six_cet_and_power_days_from_local_midnight() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    for record in _valid_trades(1000):
        start = dt.datetime.fromisoformat(record["delivery_start"])
        if record["commodity"] == "NG":
            assert start.astimezone(berlin).hour == 6, record["trade_id"]
        elif record["product_code"] in ("DE-BASE-D", "NL-BASE-D", "FR-BASE-D"):
            assert start.hour == 0 and start.minute == 0


def test_money_and_volumes_are_exact() -> None:
    for record in _valid_trades(1500):
        assert record["volume_mwh"] > 0
        assert round(record["price"], 2) == record["price"]
        assert round(record["notional"], 2) == record["notional"]
        assert abs(record["notional"] - record["price"] * record["volume_mwh"]) <= 0.005 + 1e-9


def test_about_one_in_six_trades_has_contiguous_legs_that_sum_exactly() -> None:
    records = _valid_trades(1200)
    with_legs = [r for r in records if "legs" in r]
    assert 0.12 < len(with_legs) / len(records) < 0.22
    for record in with_legs:
        legs = record["legs"]
        assert 2 <= len(legs) <= 4
        assert round(sum(leg["volume_mwh"] for leg in legs), 3) == record["volume_mwh"]
        assert legs[0]["delivery_start"] == record["delivery_start"]
        assert legs[-1]["delivery_end"] == record["delivery_end"]
        assert all(a["delivery_end"] == b["delivery_start"] for a, b in zip(legs, legs[1:]))


def test_field_values_are_realistic() -> None:
    records = _valid_trades(1000)
    assert {r["commodity"] for r in records} == {"EL", "NG"}
    assert {r["currency"] for r in records} == {"EUR", "GBP", "GBX"}
    assert {r["currency"] for r in records if r["currency"] == "GBX" or r["product_code"] == "NBP-DA"} == {"GBP", "GBX"}
    assert Counter(r["currency"] for r in records).most_common(1)[0][0] == "EUR"
    assert {r["version"] for r in records} == {1, 2, 3} and {r["buy_sell"] for r in records} == {"B", "S"}
    assert all(is_valid_eic(r["delivery_point"]) for r in records)
    assert len({r["counterparty_lei"] for r in records}) == 50
    assert all(r["updated_at"].endswith("Z") and r["trade_date"] <= r["delivery_start"][:10] for r in records)


def test_settlement_dates_spread_over_2025_and_follow_the_delivery_month() -> None:
    records = [settlement(i, 7) for i in range(120) if is_invalid_settlement(i, 7) is None]
    assert {r["settlement_date"][:7] for r in records} == {f"2025-{m:02d}" for m in range(1, 13)}
    assert {r["status"] for r in records} == {"pending", "settled", "disputed"}
    for i, record in enumerate(settlement(i, 7) for i in range(120)):
        assert data.settlement_date(i, 7)[:4] == "2025"
        assert record["trade_id"] in {f"ACME-T-{2 * i + 1:07d}", f"ACME-T-{2 * i + 2:07d}"}


def test_a_settlement_names_its_trades_counterparty() -> None:
    checked = 0
    for i in range(60):
        record = settlement(i, 7)
        index = int(record["trade_id"][-7:]) - 1
        if is_invalid_settlement(i, 7) is None and is_invalid_trade(index, 7) is None:
            assert record["counterparty_lei"] == trade(index, 7)["counterparty_lei"]
            checked += 1
    assert checked >= 50


# --- building blocks ----------------------------------------------------------------------------

def test_lei_and_eic_arithmetic_matches_the_reference_examples() -> None:
    for code in ("HWUPKR0MPOU8FGXBT394", "7LTWFZYICNSX8D621K86", "5493001KJTIIGC8Y1R12", "529900T8BM49AURSDO55"):
        assert is_valid_lei(code) and _lei(code)
    for code in ("HWUPKR0MPOU8FGXBT395", "969500T3MBS4SQAMHJ45", "a1b2c3d4e5f6g7h8i9l0"):
        assert not is_valid_lei(code) and not _lei(code)
    for code in ("10YCZ-CEPS-----N", "10X1001A1001A450", "10YGB----------A", "37Y005053MH0000R", "21YNL----TTF---1"):
        assert is_valid_eic(code) and _eic(code)
    for code in ("10YCB-EUROPEU--8", "21X000EUROPEU--8", "10YEU-EUROPOW--8"):
        assert not is_valid_eic(code) and not _eic(code)
    pool = lei_pool(7)
    assert len(set(pool)) == 50 and all(_lei(code) and not _lei(corrupt_lei(code)) for code in pool)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Europe/London", "Europe/Amsterdam", "Europe/Paris"])
def test_fast_local_time_agrees_with_zoneinfo_all_through_2025(zone: str) -> None:
    tz = ZoneInfo(zone)
    first = epoch_day(2025, 1, 1) * DAY
    for instant in range(first, first + 366 * DAY, 1800):
        assert local_iso(instant, zone) == dt.datetime.fromtimestamp(instant, tz).isoformat()
    assert utc_iso(first + 3661) == "2025-01-01T01:01:01Z"
