"""The sandbox vendor's data: deterministic, seeded and lazy.

``trade(i, seed)`` and ``settlement(i, seed)`` build record ``i`` from a hash of ``(seed, i)``
alone, without generating the others, so a dataset of a million records costs nothing until a
page of it is asked for. The same ``(i, seed)`` always gives the same dict.

About 1 in 20 trades and 1 in 25 settlements break the contract on purpose, each in one of the
ways real vendors do (see ``TRADE_DEFECTS`` and ``SETTLEMENT_DEFECTS``); ``is_invalid_trade`` and
``is_invalid_settlement`` name the defect of a record, so tests and benchmarks know the answer.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from etrmflow.sandbox.identifiers import LEI_POOL_SIZE, corrupt_lei, lei_pool
from etrmflow.sandbox.localtime import DAY, HOUR, date_text, local_iso, utc_iso
from etrmflow.sandbox.products import (
    CLOCK_CHANGE_DAYS,
    DELIVERY_DAYS_IN_YEAR,
    FIRST_DELIVERY_DAY,
    MULTI_HOUR_PRODUCTS,
    PRODUCTS,
    Product,
)

TRADE_DEFECTS: tuple[str, ...] = (
    "bad_lei_check_digits",
    "delivery_end_before_start",
    "missing_price",
    "unknown_currency",
    "negative_volume",
    "legs_not_summing",
    "naive_timestamp",
)
SETTLEMENT_DEFECTS: tuple[str, ...] = (
    "bad_lei_check_digits",
    "unknown_currency",
    "missing_amount",
    "unknown_status",
    "settled_before_delivery",
    "bad_date_format",
)
TRADE_DEFECT_EVERY = 20
SETTLEMENT_DEFECT_EVERY = 25
SETTLEMENT_STATUSES = ("pending", "settled", "disputed")
_VERSIONS = (1, 1, 1, 1, 1, 1, 2, 2, 2, 3)


def trade_id(i: int) -> str:
    return f"ACME-T-{i + 1:07d}"


def settlement_id(i: int) -> str:
    return f"ACME-S-{i + 1:07d}"


def _draw(kind: bytes, i: int, seed: int) -> int:
    """256 pseudo-random bits from (kind, seed, i): stable across runs, machines and versions."""
    digest = hashlib.blake2b(b"%s:%d:%d" % (kind, seed, i), digest_size=32).digest()
    return int.from_bytes(digest, "little")


def _defect(i: int, seed: int, every: int, names: tuple[str, ...]) -> str | None:
    slot = i + seed
    if slot % every != every - 1:
        return None
    return names[(slot // every) % len(names)]


def is_invalid_trade(i: int, seed: int) -> str | None:
    """The defect planted in trade ``i`` (one of ``TRADE_DEFECTS``), or None if it is valid."""
    return _defect(i, seed, TRADE_DEFECT_EVERY, TRADE_DEFECTS)


def is_invalid_settlement(i: int, seed: int) -> str | None:
    """The defect planted in settlement ``i`` (one of ``SETTLEMENT_DEFECTS``), or None."""
    return _defect(i, seed, SETTLEMENT_DEFECT_EVERY, SETTLEMENT_DEFECTS)


def _round_div(numerator: int, denominator: int) -> int:
    """Integer division rounding halves up: money stays exact until the final float."""
    return (2 * numerator + denominator) // (2 * denominator)


def _price(draw: int, low: int, high: int) -> tuple[int, int]:
    draw, offset = divmod(draw, high - low + 1)
    return draw, low + offset


class _Leg(NamedTuple):
    leg_id: str
    start: int
    end: int
    milli_mwh: int
    cents: int


def _legs(draw: int, product: Product, start: int, end: int, tid: str) -> tuple[int, list[_Leg]]:
    """2 to 4 consecutive legs covering the period, each with its own MW and price (shaped)."""
    draw, extra = divmod(draw, 3)
    count = 2 + extra
    hours = (end - start) // HOUR
    chunk = hours // count
    legs, leg_start = [], start
    for number in range(1, count + 1):
        leg_hours = chunk if number < count else hours - chunk * (count - 1)
        draw, tenths_mw = divmod(draw, 491)
        draw, cents = _price(draw, *product.price_cents)
        leg_end = leg_start + leg_hours * HOUR
        legs.append(_Leg(f"{tid}-L{number}", leg_start, leg_end, (10 + tenths_mw) * 100 * leg_hours, cents))
        leg_start = leg_end
    return draw, legs


def _leg_dicts(legs: list[_Leg], zone: str) -> list[dict[str, Any]]:
    return [
        {"leg_id": leg.leg_id, "delivery_start": local_iso(leg.start, zone),
         "delivery_end": local_iso(leg.end, zone), "volume_mwh": leg.milli_mwh / 1000, "price": leg.cents / 100}
        for leg in legs
    ]


def _delivery_day(draw: int, product: Product) -> tuple[int, int]:
    draw, near_clock_change = divmod(draw, 4)
    if near_clock_change == 0:
        draw, season = divmod(draw, len(CLOCK_CHANGE_DAYS))
        draw, shift = divmod(draw, 4)
        return draw, product.day_spanning(CLOCK_CHANGE_DAYS[season]) + (-1, 0, 0, 1)[shift]
    draw, pick = divmod(draw, DELIVERY_DAYS_IN_YEAR)
    return draw, FIRST_DELIVERY_DAY + pick


def _delivery(draw: int, with_legs: bool) -> tuple[int, Product, int, int, int]:
    """(draw, product, delivery day, UTC start, UTC end)."""
    products = MULTI_HOUR_PRODUCTS if with_legs else PRODUCTS
    draw, product_index = divmod(draw, len(products))
    product = products[product_index]
    draw, day = _delivery_day(draw, product)
    draw, hour_pick = divmod(draw, 50)
    start, end = product.period(day, hour_pick)
    return draw, product, day, start, end


def _quantities(draw: int, product: Product, start: int, end: int,
                legs_of: str | None) -> tuple[int, int, int, list[_Leg]]:
    """(draw, volume in kWh i.e. thousandths of a MWh, price in cents, legs); exact integers."""
    if legs_of is None:
        draw, tenths_mw = divmod(draw, 491)
        draw, cents = _price(draw, *product.price_cents)
        return draw, (10 + tenths_mw) * 100 * (end - start) // HOUR, cents, []
    draw, legs = _legs(draw, product, start, end, legs_of)
    milli = sum(leg.milli_mwh for leg in legs)
    return draw, milli, _round_div(sum(leg.milli_mwh * leg.cents for leg in legs), milli), legs


def _valid_trade(i: int, seed: int, defect: str | None) -> dict[str, Any]:
    draw = _draw(b"trade", i, seed)
    draw, lei_index = divmod(draw, LEI_POOL_SIZE)  # first, so settlements can find it cheaply
    draw, legs_roll = divmod(draw, 6)
    with_legs = defect == "legs_not_summing" or (legs_roll == 0 and defect != "negative_volume")
    draw, product, day, start, end = _delivery(draw, with_legs)
    tid = trade_id(i)
    draw, milli, cents, legs = _quantities(draw, product, start, end, tid if with_legs else None)
    draw, currency_pick = divmod(draw, len(product.currencies))
    currency = product.currencies[currency_pick]
    if currency == "GBX":  # pence: the same money, a hundred times the number
        cents *= 100
        legs = [leg._replace(cents=leg.cents * 100) for leg in legs]
    draw, version_pick = divmod(draw, len(_VERSIONS))
    draw, side = divmod(draw, 2)
    draw, lead_days = divmod(draw, 7)
    draw, second_of_day = divmod(draw, 10 * HOUR)
    version = _VERSIONS[version_pick]
    trade_day = day - 1 - lead_days
    record: dict[str, Any] = {
        "trade_id": tid,
        "version": version,
        "trade_date": date_text(trade_day),
        "counterparty_lei": lei_pool(seed)[lei_index],
        "commodity": product.commodity,
        "product_code": product.code,
        "buy_sell": "BS"[side],
        "delivery_point": product.delivery_point,
        "delivery_start": local_iso(start, product.zone),
        "delivery_end": local_iso(end, product.zone),
        "volume_mwh": milli / 1000,
        "price": cents / 100,
        "currency": currency,
        "notional": _round_div(cents * milli, 1000) / 100,
        "updated_at": utc_iso(trade_day * DAY + 7 * HOUR + second_of_day + (version - 1) * 5400),
    }
    if legs:
        record["legs"] = _leg_dicts(legs, product.zone)
    return record


def _break_trade(record: dict[str, Any], defect: str) -> None:
    if defect == "bad_lei_check_digits":
        record["counterparty_lei"] = corrupt_lei(record["counterparty_lei"])
    elif defect == "delivery_end_before_start":
        record["delivery_start"], record["delivery_end"] = record["delivery_end"], record["delivery_start"]
    elif defect == "missing_price":
        del record["price"]
    elif defect == "unknown_currency":
        record["currency"] = "EURO"
    elif defect == "negative_volume":
        record["volume_mwh"] = -record["volume_mwh"]
        record["notional"] = -record["notional"]  # keep notional = price x volume: one defect only
    elif defect == "legs_not_summing":
        record["legs"][-1]["volume_mwh"] = round(record["legs"][-1]["volume_mwh"] + 1.5, 3)
    elif defect == "naive_timestamp":
        record["delivery_start"] = record["delivery_start"][:19]


def trade(i: int, seed: int) -> dict[str, Any]:
    """Trade record ``i`` of the dataset with this seed (see the module docstring)."""
    defect = is_invalid_trade(i, seed)
    record = _valid_trade(i, seed, defect)
    if defect:
        _break_trade(record, defect)
    return record


def trade_counterparty(i: int, seed: int) -> str:
    """The (valid) counterparty LEI of trade ``i``, without building the trade."""
    return lei_pool(seed)[_draw(b"trade", i, seed) % LEI_POOL_SIZE]


def _month_text(months: int) -> str:
    """``YYYY-MM`` of a month counted from 2025-01 (0 = 2025-01, -1 = 2024-12)."""
    year, month = divmod(2025 * 12 + months, 12)
    return f"{year:04d}-{month + 1:02d}"


def _settlement_parts(i: int, seed: int) -> tuple[int, int, int]:
    """(draw, settlement month from 2025-01, day of month): the date without the record."""
    draw = _draw(b"settlement", i, seed)
    draw, month = divmod(draw, 12)
    draw, day = divmod(draw, 28)
    return draw, month, day + 1


def settlement_date(i: int, seed: int) -> str:
    """The true settlement date of settlement ``i`` (what the vendor filters on), even when the
    record itself carries a broken one."""
    _, month, day = _settlement_parts(i, seed)
    return f"{_month_text(month)}-{day:02d}"


def settlement(i: int, seed: int) -> dict[str, Any]:
    """Settlement record ``i``: a payment for one month of delivery of one trade.

    Settlement dates spread over 2025; the delivery month is the month before.
    """
    draw, month, day = _settlement_parts(i, seed)
    draw, trade_pick = divmod(draw, 2)
    draw, amount_cents = divmod(draw, 50_000_000)
    draw, sign = divmod(draw, 2)
    draw, currency_pick = divmod(draw, 7)
    draw, status_pick = divmod(draw, 10)
    trade_index = 2 * i + trade_pick
    record: dict[str, Any] = {
        "settlement_id": settlement_id(i),
        "trade_id": trade_id(trade_index),
        "counterparty_lei": trade_counterparty(trade_index, seed),
        "settlement_date": f"{_month_text(month)}-{day:02d}",
        "delivery_month": _month_text(month - 1),
        "amount": (1_000_00 + amount_cents) * (1 - 2 * sign) / 100,
        "currency": "GBP" if currency_pick == 0 else "EUR",
        "status": SETTLEMENT_STATUSES[(0, 0, 0, 1, 1, 1, 1, 1, 1, 2)[status_pick]],
    }
    defect = is_invalid_settlement(i, seed)
    if defect:
        _break_settlement(record, defect, month, day)
    return record


def _break_settlement(record: dict[str, Any], defect: str, month: int, day: int) -> None:
    if defect == "bad_lei_check_digits":
        record["counterparty_lei"] = corrupt_lei(record["counterparty_lei"])
    elif defect == "unknown_currency":
        record["currency"] = "EURO"
    elif defect == "missing_amount":
        del record["amount"]
    elif defect == "unknown_status":
        record["status"] = "paid"
    elif defect == "settled_before_delivery":
        record["delivery_month"] = _month_text(month + 1)
    elif defect == "bad_date_format":
        record["settlement_date"] = f"{day:02d}/{record['settlement_date'][5:7]}/{record['settlement_date'][:4]}"


__all__ = [
    "SETTLEMENT_DEFECTS",
    "TRADE_DEFECTS",
    "is_invalid_settlement",
    "is_invalid_trade",
    "settlement",
    "settlement_date",
    "trade",
]
