"""Exact decimal money: x-etrmflow-decimal is validated, converted after validation and stored
exactly by every sink (SQLite text, Parquet decimal128, CSV text)."""

from __future__ import annotations

import csv
import math
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etrmflow.builtins.formats import FORMAT_CHECKERS
from etrmflow.builtins.validators import JsonSchemaValidator
from etrmflow.components import (
    BatchInfo,
    ContractInfo,
    SinkContext,
    ValidationContext,
    Violation,
)
from etrmflow.errors import SinkError
from etrmflow.sandbox.data import is_invalid_trade, trade
from etrmflow.sinks import CsvSink, ParquetSink, SqliteSink
from etrmflow.testing import EtrmflowProject, SandboxFactory, sandbox_connector
from etrmflow.validation.columns import Column
from etrmflow.validation.decimal_fields import DecimalFields
from etrmflow.validation.decimals import (
    DecimalSpec,
    decimal_problem,
    exact_problem,
    parse_spec,
    plain_float,
    spec_problem,
    to_decimal,
)
from etrmflow.validation.value_checks import DecimalCheck

REPO = Path(__file__).resolve().parents[1]
CENTS = DecimalSpec(scale=2, precision=18)
MONEY = {"type": "number", "x-etrmflow-decimal": {"scale": 2, "precision": 18}}
CONTRACT = ContractInfo(name="money", version="1", primary_key=("trade_id",), schema={
    "type": "object", "properties": {"trade_id": {"type": "string"}, "price": MONEY,
                                     "notional": MONEY, "volume_mwh": {"type": "number"}}})
MONEY_VALUES = [40.45, 0.1, 1234567.89, 606.75]
MONEY_TEXT = ["40.45", "0.10", "1234567.89", "606.75"]


# --- the claim behind Decimal(repr(value)) ------------------------------------------------------

significant = st.integers(min_value=1, max_value=10 ** 15 - 1)


@given(significant, st.integers(min_value=-290, max_value=290), st.booleans())
def test_a_json_number_of_at_most_15_digits_reads_back_exactly_through_repr(
        digits: int, exponent: int, negative: bool) -> None:
    written = Decimal(f"{'-' if negative else ''}{digits}E{exponent}")
    parsed = orjson.loads(format(written, "E"))  # what the vendor sent, as orjson reads it
    assert isinstance(parsed, float)
    assert Decimal(repr(parsed)) == written
    assert len(Decimal(repr(parsed)).normalize().as_tuple().digits) <= 15  # never "17 digits"


near_cents = st.builds(lambda k, shift: math.nextafter(k / 100, math.inf) if shift > 0 else
                      math.nextafter(k / 100, -math.inf) if shift < 0 else k / 100,
                      st.integers(-10 ** 15, 10 ** 15), st.integers(-1, 1))


@given(near_cents | st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 4), st.integers(1, 38))
def test_the_quick_yes_for_plain_floats_agrees_with_the_definition(value: float, scale: int,
                                                                    precision: int) -> None:
    spec = DecimalSpec(scale=min(scale, precision), precision=precision)
    if plain_float(value, spec):
        assert exact_problem(value, spec) is None
    assert decimal_problem(value, spec) == exact_problem(value, spec)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 38), st.lists(st.tuples(st.integers(-10 ** 15, 10 ** 15), st.sampled_from([-1, 0, 1])),
                                    min_size=40, max_size=60))
def test_page_checks_agree_with_the_definition_at_every_scale(scale: int, draws: list[tuple[int, int]]) -> None:
    # Above scale 22, 10**scale is not a double: neither the quick yes nor numpy may judge there.
    spec = DecimalSpec(scale=scale, precision=38)
    values = []
    for units, nudge in draws:
        value = float(Decimal(units).scaleb(-scale))
        values.append(math.nextafter(value, math.copysign(math.inf, nudge)) if nudge else value)
    expected = [k for k, value in enumerate(values) if exact_problem(value, spec)]
    assert [k for k, value in enumerate(values) if decimal_problem(value, spec)] == expected
    assert DecimalCheck(spec).failing(Column(values=values, owners=list(range(len(values))))) == expected


def test_seventeen_digits_do_not_survive_a_float_and_are_refused() -> None:
    parsed = orjson.loads(b"0.30000000000000004")
    assert repr(parsed) == "0.30000000000000004"  # 17 significant digits: not what a float keeps
    assert decimal_problem(parsed, CENTS) == ("0.30000000000000004 has 17 significant digits; a JSON "
                                              "number with more than 15 cannot be read exactly")


@pytest.mark.parametrize("value, problem", [
    (40.45, None), (40.5, None), (-0.01, None), (0.0, None), (40, None), (4959100.0, None),
    (Decimal("606.75"), None), ("40.455", None), (True, None), (None, None),
    (40.455, "40.455 has more than 2 decimal places (x-etrmflow-decimal scale 2)"),
    (1e-05, "1e-05 has more than 2 decimal places (x-etrmflow-decimal scale 2)"),
    (Decimal("0.001"), "Decimal('0.001') has more than 2 decimal places (x-etrmflow-decimal scale 2)"),
    (1e16, ("1e+16 has more than 16 digits before the decimal point (x-etrmflow-decimal precision 18, "
           "scale 2)")),
    (10 ** 16, ("10000000000000000 has more than 16 digits before the decimal point (x-etrmflow-decimal "
               "precision 18, scale 2)")),
    (123456789012.345, "123456789012.345 has more than 2 decimal places (x-etrmflow-decimal scale 2)"),
    (12345678901234.567, ("12345678901234.566 has 17 significant digits; a JSON number with more than 15 "
                         "cannot be read exactly")),
    (float("inf"), "inf is not a finite number"),
])
def test_decimal_problems_are_named_exactly(value: Any, problem: str | None) -> None:
    assert decimal_problem(value, CENTS) == problem


@pytest.mark.parametrize("declared, problem", [
    ({"scale": 2}, None), ({"scale": 0, "precision": 1}, None), ({"scale": 38, "precision": 38}, None),
    ([2, 18], "expected a mapping such as {scale: 2, precision: 18}"),
    ({"precision": 18}, "scale must be an integer from 0 to the precision (18), got None"),
    ({"scale": 3, "precision": 2}, "scale must be an integer from 0 to the precision (2), got 3"),
    ({"scale": 2, "precision": 39}, "precision must be an integer from 1 to 38, got 39"),
    ({"scale": True}, "scale must be an integer from 0 to the precision (18), got True"),
    ({"scale": 2, "digits": 4}, "unknown key(s) digits (allowed: scale, precision)"),
])
def test_declarations_are_checked(declared: Any, problem: str | None) -> None:
    assert spec_problem(declared) == problem
    if problem:
        with pytest.raises(ValueError, match="x-etrmflow-decimal: "):
            parse_spec(declared)


def test_conversion_quantizes_to_the_scale_without_rounding() -> None:
    assert [str(to_decimal(v, CENTS)) for v in [40.45, 40.5, 40, 1e16, -0.0]] == [
        "40.45", "40.50", "40.00", "10000000000000000.00", "-0.00"]
    assert to_decimal(None, CENTS) is None
    record = {"trade_id": "T1", "price": 40.5, "legs": [{"price": 0.1}, {"price": 2.0}, 7]}
    fields = DecimalFields({"properties": {"price": MONEY, "legs": {"items": {"properties": {"price": MONEY}}}}})
    (converted,) = fields.convert([record])
    assert converted == {"trade_id": "T1", "price": Decimal("40.50"),
                         "legs": [{"price": Decimal("0.10")}, {"price": Decimal("2.00")}, 7]}
    assert str(converted["legs"][0]["price"]) == "0.10"
    assert record == {"trade_id": "T1", "price": 40.5, "legs": [{"price": 0.1}, {"price": 2.0}, 7]}


# --- validation: too many decimals is a violation, never a rounding --------------------------------

def trade_validator() -> JsonSchemaValidator:
    schema = yaml.safe_load((REPO / "contracts" / "trade.yml").read_text(encoding="utf-8"))["schema"]
    info = ContractInfo(name="trade", version="1", primary_key=("trade_id", "version"), schema=schema)
    return JsonSchemaValidator({}, context=ValidationContext(contract=info, format_checkers=FORMAT_CHECKERS))


def test_the_trade_contract_quarantines_a_price_with_too_many_decimals() -> None:
    record = dict(trade(0, seed=7), price=40.455, notional=12345678901234.567)
    assert trade_validator().validate([trade(0, seed=7), record]) == [[], [
        Violation(pointer="/notional", keyword="x-etrmflow-decimal", validator="json_schema",
                  message="12345678901234.566 has 17 significant digits; a JSON number with more "
                          "than 15 cannot be read exactly"),
        Violation(pointer="/price", keyword="x-etrmflow-decimal", validator="json_schema",
                  message="40.455 has more than 2 decimal places (x-etrmflow-decimal scale 2)")]]


# --- the sinks store the exact digits ---------------------------------------------------------------

def frame_of(values: list[float]) -> pd.DataFrame:
    records = [{"trade_id": f"T{i}", "price": v, "notional": v, "volume_mwh": 1.5} for i, v in enumerate(values)]
    return pd.DataFrame.from_records(DecimalFields(CONTRACT.schema).convert(records))


def write(sink: Any, root: Path, frame: pd.DataFrame) -> None:
    sink.open(SinkContext(pipeline="money", run_id="run-1", contract=CONTRACT, project_dir=str(root),
                          target_dir=str(root / "target")))
    sink.write(frame, BatchInfo(run_id="run-1", batch_id="b0", page_sha256="sha", pipeline="money"))
    sink.close(True)


def read_back(root: Path, frame: pd.DataFrame) -> dict[str, list[Any]]:
    """(SQLite text, Parquet Decimal, CSV text) of the price column, in trade_id order."""
    for sink in (SqliteSink({"table": "money"}), ParquetSink({"path": "out/money"}),
                 CsvSink({"path": "out/money.csv"})):
        write(sink, root, frame)
    with sqlite3.connect(root / "target/etrmflow.db") as db:
        sqlite = db.execute("SELECT price, typeof(price) FROM money ORDER BY rowid").fetchall()
    parquet = pq.read_table(root / "out/money")
    with (root / "out/money.csv").open(encoding="utf-8", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert parquet.schema.field("price").type == pa.decimal128(18, 2)
    assert {kind for _, kind in sqlite} <= {"text"}
    return {"sqlite": [text for text, _ in sqlite], "parquet": parquet.column("price").to_pylist(),
            "csv": [row["price"] for row in csv_rows]}


def test_money_round_trips_exactly_through_sqlite_parquet_and_csv(tmp_path: Path) -> None:
    assert read_back(tmp_path, frame_of(MONEY_VALUES)) == {
        "sqlite": MONEY_TEXT, "parquet": [Decimal(text) for text in MONEY_TEXT], "csv": MONEY_TEXT}
    with sqlite3.connect(tmp_path / "target/etrmflow.db", detect_types=sqlite3.PARSE_DECLTYPES) as db:
        declared = db.execute("SELECT type FROM pragma_table_info('money') WHERE name = 'price'").fetchone()
        sqlite3.register_converter("DECIMAL_TEXT", lambda raw: Decimal(raw.decode()))
        prices = [row[0] for row in db.execute("SELECT price FROM money ORDER BY rowid")]
    assert declared == ("DECIMAL_TEXT(18,2)",)
    assert prices == [Decimal(text) for text in MONEY_TEXT]


cents = st.decimals(min_value=Decimal("-9999999999999.99"), max_value=Decimal("9999999999999.99"),
                    places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(cents, min_size=1, max_size=20))
def test_any_cent_amount_round_trips_exactly(tmp_path_factory: pytest.TempPathFactory,
                                             amounts: list[Decimal]) -> None:
    floats = [float(amount) for amount in amounts]  # what a JSON decoder gives
    found = read_back(tmp_path_factory.mktemp("money"), frame_of(floats))
    exact = [amount.quantize(Decimal("0.01")) for amount in amounts]
    assert found == {"sqlite": [format(v, "f") for v in exact], "parquet": exact,
                     "csv": [format(v, "f") for v in exact]}


@pytest.mark.parametrize("value, reason", [
    (40.455, "40.455 has more than 2 decimal places"), ("40.45", "'40.45' is not a number"),
])
def test_a_sink_refuses_a_value_it_cannot_store_exactly(tmp_path: Path, value: Any, reason: str) -> None:
    # A transform may compute a float with more decimals: the write fails rather than round.
    frame = pd.DataFrame({"trade_id": ["T1"], "price": [value]})
    for sink in (SqliteSink({"table": "money"}), ParquetSink({"path": "out/money"}),
                 CsvSink({"path": "out/money.csv"})):
        with pytest.raises(SinkError, match=reason):
            write(sink, tmp_path, frame)


# --- end to end: a run quarantines what it cannot hold exactly and loads the rest exactly ------------

def test_a_run_quarantines_prices_finer_than_the_scale_and_loads_the_rest_exactly(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    contract = yaml.safe_load((REPO / "contracts" / "trade.yml").read_text(encoding="utf-8"))
    contract["schema"]["properties"]["price"]["x-etrmflow-decimal"] = {"scale": 1, "precision": 18}
    contract.pop("examples")
    vendor = sandbox_vendor_factory(trades=60)
    etrmflow_project.write({
        "connectors/vendor.yml": sandbox_connector(page_size=25),
        "contracts/trade.yml": yaml.safe_dump(contract, sort_keys=False),
        "pipelines/trades.yml": "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"
                                "sinks:\n  - {type: sqlite, path: target/etrmflow.db, table: trades}\n"
                                "  - {type: csv, path: target/trades.csv}\n"})
    etrmflow_project.env.update(SANDBOX_URL=vendor.base_url, SANDBOX_KEY="sandbox-key")

    result = etrmflow_project.run("run", "pipelines/trades.yml")

    sent = [trade(i, seed=7) for i in range(60)]
    fine = {r["trade_id"]: r["price"] for r in sent if "price" in r and round(r["price"], 1) != r["price"]}
    letters = {letter["record"]["trade_id"]: letter["violations"]
               for letter in etrmflow_project.dead_letters("trades")}
    assert result.exit_code == 0, result.output
    defective = {r["trade_id"] for i, r in enumerate(sent) if is_invalid_trade(i, seed=7)}
    assert set(letters) == set(fine) | defective
    for trade_id, price in fine.items():
        assert {"pointer": "/price", "keyword": "x-etrmflow-decimal", "validator": "json_schema",
                "message": f"{price!r} has more than 1 decimal places (x-etrmflow-decimal scale 1)"} \
            in letters[trade_id]
    loaded = dict(etrmflow_project.query("SELECT trade_id, price FROM trades"))
    by_id = {r["trade_id"]: r for r in sent}
    assert loaded and not set(loaded) & set(fine)
    assert loaded == {tid: format(Decimal(repr(by_id[tid]["price"])).quantize(Decimal("0.1")), "f")
                      for tid in loaded}
    with etrmflow_project.path("target/trades.csv").open(encoding="utf-8", newline="") as handle:
        assert {row["trade_id"]: row["price"] for row in csv.DictReader(handle)} == loaded


def test_a_malformed_declaration_stops_the_validator_before_any_record() -> None:
    schema = {"properties": {"fee": {"anyOf": [{"type": "number", "x-etrmflow-decimal": {"scale": "two"}}]}}}
    info = ContractInfo(name="bad", version="1", primary_key=(), schema=schema)
    with pytest.raises(ValueError, match=r"^x-etrmflow-decimal: scale must be an integer from 0 to the "
                                         r"precision \(18\), got 'two'$"):
        JsonSchemaValidator({}, context=ValidationContext(contract=info, format_checkers=FORMAT_CHECKERS))
