"""The http sink's request bodies: exact JSON (money never through a float), and the
idempotency key that the same rows always get. Its requests are tested over loopback in
tests/functional/test_writeback.py."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from etrmflow.engine.http_client import RawResponse, classify
from etrmflow.errors import RetriableFetchError, SinkError
from etrmflow.plan import (
    BreakerPolicy,
    ComponentPlan,
    ConnectorPlan,
    RetryPolicy,
    SinkConnectorPlan,
    TimeoutPolicy,
)
from etrmflow.sinks.http_post import HttpPostSink, request_policy
from etrmflow.sinks.json_body import chunks, encode, idempotency_key, row_objects
from etrmflow.validation.decimals import DecimalSpec

CENTS = {"amount": DecimalSpec(scale=2, precision=18)}


def body_of(frame: pd.DataFrame, *, columns: list[str] | None = None, wrap: str | None = None,
            decimals: dict[str, DecimalSpec] | None = None, numbers: frozenset[str] = frozenset()) -> bytes:
    return encode(row_objects(frame, columns, decimals or {}, numbers=numbers), wrap)


def test_declared_money_is_sent_at_its_scale_with_every_digit() -> None:
    frame = pd.DataFrame({"settlement_id": ["S-1", "S-2", "S-3", "S-4"],
                          "amount": [Decimal("40.50"), 40.5, -93423.35, Decimal("12345678901234.99")]})

    body = body_of(frame, decimals=CENTS)

    assert body == (b'[{"amount":40.50,"settlement_id":"S-1"},{"amount":40.50,"settlement_id":"S-2"},'
                    b'{"amount":-93423.35,"settlement_id":"S-3"},{"amount":12345678901234.99,"settlement_id":"S-4"}]')


def test_money_that_would_need_rounding_is_refused_not_rounded() -> None:
    frame = pd.DataFrame({"amount": [Decimal("40.555")]})

    with pytest.raises(SinkError, match=r"^column 'amount': .*40\.555.* more than 2 decimal places.*refusing to round"):
        body_of(frame, decimals=CENTS)


def test_undeclared_decimals_keep_their_digits_and_floats_their_shortest_form() -> None:
    frame = pd.DataFrame({"price": [Decimal("0.10"), Decimal("1E+2")], "volume": [0.1, 25.0],
                          "count": np.array([1, 2], dtype="int64"), "flag": [True, False]})

    assert body_of(frame) == (b'[{"count":1,"flag":true,"price":0.10,"volume":0.1},'
                              b'{"count":2,"flag":false,"price":100,"volume":25.0}]')


def test_a_rows_body_does_not_depend_on_the_other_rows_of_its_page() -> None:
    # pandas holds an integer column with a gap as float (5 -> 5.0), and a number column float as
    # soon as one row has a fraction (100 -> 100.0): the same row would get another body, and so
    # another idempotency key, whenever another row of its page changed.
    alone = pd.DataFrame.from_records([{"id": "A", "qty": 5, "amount": 100}])
    beside = pd.DataFrame.from_records([{"id": "A", "qty": 5, "amount": 100}, {"id": "B", "qty": None, "amount": 20.5}])
    numbers = frozenset({"qty", "amount"})

    assert body_of(alone, numbers=numbers) == body_of(beside.iloc[:1], numbers=numbers) == (
        b'[{"amount":100,"id":"A","qty":5}]')
    assert body_of(beside, numbers=numbers) == (
        b'[{"amount":100,"id":"A","qty":5},{"amount":20.5,"id":"B","qty":null}]')
    big = pd.DataFrame({"amount": [2.0 ** 60, -0.0, 1e300]})
    assert body_of(big, numbers=numbers) == b'[{"amount":1152921504606846976},{"amount":0},{"amount":1e+300}]'


def test_missing_values_are_null_and_nested_values_stay_json() -> None:
    frame = pd.DataFrame({"a": [None, "x"], "b": [float("nan"), 1.5], "legs": [[{"v": Decimal("1.0")}], {}]})
    frame["c"] = pd.array([pd.NA, 3], dtype="Int64")

    assert body_of(frame) == b'[{"a":null,"b":null,"c":null,"legs":[{"v":1.0}]},{"a":"x","b":1.5,"c":3,"legs":{}}]'


def test_timestamps_are_iso_8601_with_their_offset_and_naive_ones_are_refused() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    aware = pd.DataFrame({"at": [pd.Timestamp("2025-03-30T01:00:00", tz=berlin),
                                 pd.Timestamp("2025-03-30T03:00:00", tz=berlin)],
                          "day": [dt.date(2025, 3, 30), dt.date(2025, 3, 31)]})

    assert body_of(aware) == (b'[{"at":"2025-03-30T01:00:00+01:00","day":"2025-03-30"},'
                              b'{"at":"2025-03-30T03:00:00+02:00","day":"2025-03-31"}]')
    naive = pd.DataFrame({"at": [pd.Timestamp("2025-03-30T02:30:00")]})
    with pytest.raises(SinkError, match=r"^column 'at': the timestamp 2025-03-30T02:30:00 has no time zone"):
        body_of(naive)


def test_columns_select_and_order_nothing_but_what_is_asked_and_wrap_wraps() -> None:
    frame = pd.DataFrame({"b": [1], "a": [2], "secret_note": ["internal"]})

    assert body_of(frame, columns=["b", "a"], wrap="instructions") == b'{"instructions":[{"a":2,"b":1}]}'
    with pytest.raises(SinkError, match=r"^columns \['nope'\] are not in the rows \(they have: b, a, secret_note\)"):
        body_of(frame, columns=["b", "nope"])


def test_the_key_is_the_sha256_of_scheme_connector_path_and_exact_body() -> None:
    body = b'[{"amount":40.50}]'

    key = idempotency_key("acme", "/api/v2/settlement-instructions", body)

    assert key == hashlib.sha256(b"etrmflow-http-sink/1\nacme\n/api/v2/settlement-instructions\n" + body).hexdigest()
    assert idempotency_key("acme", "/api/v2/settlement-instructions", body) == key
    others = {idempotency_key("other", "/api/v2/settlement-instructions", body),
              idempotency_key("acme", "/api/v2/other", body),
              idempotency_key("acme", "/api/v2/settlement-instructions", b'[{"amount":40.5}]')}
    assert key not in others and len(others) == 3


def test_the_same_rows_in_another_column_order_make_the_same_body() -> None:
    one = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})

    assert body_of(one) == body_of(one[["b", "a"]])


def test_rows_split_in_order_into_pieces_of_batch_size() -> None:
    rows = [{"i": i} for i in range(7)]

    assert [(offset, [r["i"] for r in piece]) for offset, piece in chunks(rows, 3)] == [
        (0, [0, 1, 2]), (3, [3, 4, 5]), (6, [6])]


def test_requests_follow_the_connectors_defaults_and_declare_the_key_header() -> None:
    retry = RetryPolicy(max_attempts=3)
    target = SinkConnectorPlan(
        connector=ConnectorPlan(name="acme", type="http", file="connectors/acme.yml", base_url="https://x",
                                auth=ComponentPlan(type="none", options={}), headers={"Accept": "application/json"},
                                params={"tenant": "t1"}, tls_verify=True, ca_bundle=None, concurrency=4),
        timeout=TimeoutPolicy(total=5.0), retry=retry, breaker=BreakerPolicy(failure_threshold=2))

    stream = request_policy(target, "/api/v2/settlement-instructions", "Idempotency-Key")

    assert (stream.method, stream.path, stream.idempotency_key_header, stream.retry, stream.timeout.total,
            stream.breaker.failure_threshold) == ("POST", "/api/v2/settlement-instructions", "Idempotency-Key",
                                                  retry, 5.0, 2)
    assert (stream.headers, stream.params) == ({"Accept": "application/json"}, {"tenant": "t1"})
    # A vendor that acknowledges a booking in plain text has booked it: no retry, no failure.
    acknowledged = RawResponse(status=202, headers={}, body=b"Accepted", url="https://x/api")
    assert classify(acknowledged, "POST", retry, None, stream.response_rules, stream.json_answer) is None
    with pytest.raises(RetriableFetchError, match="malformed JSON"):  # a source's answer must be records
        classify(acknowledged, "GET", retry, None)


def test_a_sink_describes_itself_without_secrets() -> None:
    sink = HttpPostSink({"connector": "acme", "path": "/api/v2/settlement-instructions"})

    assert sink.describe() == "http acme POST /api/v2/settlement-instructions"
    assert (sink.batch_size, sink.key_header, sink.wrap, sink.columns) == (100, "Idempotency-Key", None, None)
