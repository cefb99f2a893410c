"""The reference_data and curve_snapshot validators: exact violations, loading errors, speed, a run."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etrmflow.components import (
    ContractInfo,
    Kind,
    ValidationContext,
    Validator,
    Violation,
)
from etrmflow.plugins import Registry
from etrmflow.sandbox.data import trade
from etrmflow.testing import EtrmflowProject, SandboxFactory, sandbox_connector

REPO = Path(__file__).resolve().parents[1]
CONTRACT = ContractInfo(name="trade", version="1.0.0", primary_key=("trade_id",), schema={})
CURVE = """\
product,day,price
DE-BASE-D,2025-03-30,100.00
DE-BASE-D,2025-03-31,0.3
DE-PEAK-D,2025-03-30,500
FR-BASE-D,2025-03-30,-10
"""


def build(type_name: str, project: Path, **options: Any) -> Validator:
    """The validator as a run builds it: from the registry, with the project folder."""
    cls = Registry.default(load_entry_points=False).get(Kind.VALIDATOR, type_name)
    assert cls is not None
    return cls(options, context=ValidationContext(contract=CONTRACT, project_dir=str(project)))


def violation(pointer: str, message: str, keyword: str = "reference_data") -> Violation:
    return Violation(pointer=pointer, keyword=keyword, message=message, validator=keyword)


def best_of(runs: int, action: Callable[[], object]) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


# --- reference_data ------------------------------------------------------------------------------

def test_listed_values_compare_as_text_and_missing_values_are_not_judged(tmp_path: Path) -> None:
    check = build("reference_data", tmp_path, field="currency", values=["EUR", "GBP", 7])
    records = [{"currency": "EUR"}, {"currency": "USD"}, {"currency": None}, {}, {"currency": 7.0},
               {"currency": "7"}, {"currency": ["EUR"]}, "not an object"]

    verdicts = check.validate(records)

    assert verdicts == [
        [], [violation("/currency", "'USD' is not in the listed values (7, EUR, GBP)")], [], [], [], [],
        [violation("/currency", "['EUR'] is not in the listed values (7, EUR, GBP)")], [],
    ]


def test_csv_column_with_a_byte_order_mark_and_a_nested_field(tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "counterparties.csv").write_text(
        "name,lei\nAcme,5493001KJTIIGC8Y1R12\nNoLei,\n\nBeta,213800KUD8LAJWSQ9D15\n", encoding="utf-8-sig")
    check = build("reference_data", tmp_path, field="/counterparty/lei", file="reference/counterparties.csv",
                  column="lei", message="unknown counterparty")

    verdicts = check.validate([{"counterparty": {"lei": "213800KUD8LAJWSQ9D15"}},
                               {"counterparty": {"lei": "HWUPKR0MPOU8FGXBT394"}},
                               {"counterparty": {"lei": ""}}])

    assert check.allowed == {"5493001KJTIIGC8Y1R12", "213800KUD8LAJWSQ9D15"}  # the empty cell is no value
    assert verdicts == [[], [violation("/counterparty/lei", "unknown counterparty: 'HWUPKR0MPOU8FGXBT394' is "
                                                            "not in column 'lei' of reference/counterparties.csv")],
                        [violation("/counterparty/lei", "unknown counterparty: '' is not in column 'lei' of "
                                                        "reference/counterparties.csv")]]


def test_sqlite_column_with_numbers_matches_numeric_fields(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "static.db") as db:
        db.execute("CREATE TABLE books (book_id INTEGER, name TEXT)")
        db.executemany("INSERT INTO books VALUES (?, ?)", [(42, "power"), (7, "gas"), (None, "orphan")])
    check = build("reference_data", tmp_path, field="book", database="static.db", table="books", column="book_id")

    verdicts = check.validate([{"book": 42}, {"book": 42.0}, {"book": "7"}, {"book": 43}])

    assert verdicts == [[], [], [], [violation("/book", "43 is not in column 'book_id' of table 'books' in "
                                                        "static.db")]]


@pytest.mark.parametrize(("options", "error"), [
    ({"file": "missing.csv", "column": "lei"}, "reference data file {root}/missing.csv does not exist"),
    ({"file": "refs.csv", "column": "code"}, "{root}/refs.csv has no column 'code' (its header: lei, name)"),
    ({"file": "empty.csv", "column": "lei"},
     "column 'lei' of empty.csv holds no values: every record would be quarantined"),
    ({"database": "missing.db", "table": "t", "column": "c"}, "reference database {root}/missing.db does not exist"),
    ({"database": "static.db", "table": "nope", "column": "c"}, "{root}/static.db has no table 'nope'"),
    ({"database": "static.db", "table": "books", "column": "c"},
     "table 'books' in {root}/static.db has no column 'c' (its columns: book_id)"),
    ({"values": ["EUR"], "file": "refs.csv", "column": "lei"},
     ("give exactly one source of reference data: values, file (with column) or database (with table and "
      "column); got values, file")),
])
def test_unusable_reference_data_is_an_error_naming_the_path(tmp_path: Path, options: dict[str, Any],
                                                             error: str) -> None:
    (tmp_path / "refs.csv").write_text("lei,name\nX,Y\n", encoding="utf-8")
    (tmp_path / "empty.csv").write_text("lei\n", encoding="utf-8")
    with sqlite3.connect(tmp_path / "static.db") as db:
        db.execute("CREATE TABLE books (book_id INTEGER)")

    with pytest.raises(ValueError) as caught:
        build("reference_data", tmp_path, field="x", **options)

    assert str(caught.value) == error.format(root=tmp_path)
    assert not (tmp_path / "missing.db").exists()  # opened read-only: a wrong path creates nothing


def test_reference_data_checks_a_batch_of_1000_in_well_under_10_ms(tmp_path: Path) -> None:
    rows = "\n".join(f"LEI{i:017d}" for i in range(20_000))
    (tmp_path / "leis.csv").write_text(f"lei\n{rows}\n", encoding="utf-8")
    check = build("reference_data", tmp_path, field="lei", file="leis.csv", column="lei")
    records = [{"lei": f"LEI{i * 37:017d}", "price": 1.0} for i in range(1000)]

    assert sum(map(len, check.validate(records))) == 459  # i * 37 >= 20000 from i = 541
    assert best_of(5, lambda: check.validate(records)) < 0.005


# --- curve_snapshot ------------------------------------------------------------------------------

def curve_check(tmp_path: Path, **options: Any) -> Validator:
    (tmp_path / "curves").mkdir(exist_ok=True)
    (tmp_path / "curves" / "eod.csv").write_text(CURVE, encoding="utf-8")
    keys = {"product_code": "product", "delivery_start": {"column": "day", "chars": 10}}
    return build("curve_snapshot", tmp_path, **{"file": "curves/eod.csv", "keys": keys, **options})


def deal(product: str, day: str, price: Any) -> dict[str, Any]:
    return {"product_code": product, "delivery_start": f"{day}T00:00:00+02:00", "price": price}


def test_a_relative_band_accepts_its_edges_and_rejects_beyond(tmp_path: Path) -> None:
    check = curve_check(tmp_path, band={"relative": 0.2})

    verdicts = check.validate([deal("DE-BASE-D", "2025-03-30", price) for price in (120, 80.0, 120.01, 79.99)])

    detail = "curve price 100 ± 20 (relative 0.2) for product='DE-BASE-D', day='2025-03-30' in curves/eod.csv"
    assert verdicts == [[], [], [violation("/price", f"price 120.01 is outside 80..120: {detail}", "curve_snapshot")],
                        [violation("/price", f"price 79.99 is outside 80..120: {detail}", "curve_snapshot")]]


def test_decimal_arithmetic_keeps_a_price_on_the_edge_inside(tmp_path: Path) -> None:
    # In floats 0.4 - 0.3 is 0.10000000000000003, which would reject a price on the edge.
    check = curve_check(tmp_path, band={"absolute": 0.1})

    verdicts = check.validate([deal("DE-BASE-D", "2025-03-31", price) for price in (0.4, 0.2, "0.4", 0.4000001)])

    assert [len(found) for found in verdicts] == [0, 0, 0, 1]
    assert verdicts[3][0].message.startswith("price 0.4000001 is outside 0.2..0.4: curve price 0.3 ± 0.1 (absolute 0.1)")


def test_with_both_bands_the_wider_applies(tmp_path: Path) -> None:
    check = curve_check(tmp_path, band={"absolute": 15, "relative": 0.1})

    verdicts = check.validate([deal("DE-PEAK-D", "2025-03-30", 549), deal("DE-PEAK-D", "2025-03-30", 551),
                               deal("FR-BASE-D", "2025-03-30", -24), deal("FR-BASE-D", "2025-03-30", -26)])

    assert [len(found) for found in verdicts] == [0, 1, 0, 1]
    assert verdicts[1][0].message.startswith("price 551 is outside 450..550: curve price 500 ± 50 (the wider of "
                                             "absolute 15 and relative 0.1)")
    assert verdicts[3][0].message.startswith("price -26 is outside -25..5: curve price -10 ± 15 ")


@pytest.mark.parametrize(("on_missing", "expected"), [
    ("quarantine", [[violation("", "no curve price for product='NL-BASE-D', day='2025-03-30' in curves/eod.csv",
                               "curve_snapshot")]]),
    ("pass", [[]]),
])
def test_a_record_without_a_curve_price(tmp_path: Path, on_missing: str, expected: list[Any]) -> None:
    check = curve_check(tmp_path, band={"relative": 0.2}, on_missing_curve=on_missing)

    assert check.validate([deal("NL-BASE-D", "2025-03-30", 50)]) == expected


def test_records_without_a_key_or_a_numeric_price_are_not_judged(tmp_path: Path) -> None:
    check = curve_check(tmp_path, band={"relative": 0.2})
    records = [{"product_code": "DE-BASE-D", "price": 1e6}, deal("DE-BASE-D", "2025-03-30", None),
               deal("DE-BASE-D", "2025-03-30", "n/a"), deal("DE-BASE-D", "2025-03-30", True), [1, 2]]

    assert check.validate(records) == [[], [], [], [], []]


@pytest.mark.parametrize(("curve", "error"), [
    ("product,day,price\nDE-BASE-D,2025-03-30,n/a\n", "{path}:2: curve price 'n/a' is not a number"),
    ("product,day,price\nDE-BASE-D,2025-03-30,1\nDE-BASE-D,2025-03-30,2\n",
     "{path}:3: a second curve price for product='DE-BASE-D', day='2025-03-30' (2, after 1)"),
    ("product,price\nDE-BASE-D,1\n", "{path} has no column 'day' (its header: product, price)"),
])
def test_an_unusable_curve_file_is_an_error_with_its_line(tmp_path: Path, curve: str, error: str) -> None:
    path = tmp_path / "curve.csv"
    path.write_text(curve, encoding="utf-8")

    with pytest.raises(ValueError) as caught:
        build("curve_snapshot", tmp_path, file="curve.csv", keys={"product_code": "product", "day": "day"},
              band={"relative": 0.1})

    assert str(caught.value) == error.format(path=path)


def test_curve_snapshot_checks_a_batch_of_1000_in_well_under_10_ms(tmp_path: Path) -> None:
    days = [f"2025-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]
    rows = "".join(f"P{p},{day},{40 + p + d / 100:.2f}\n" for p in range(10) for d, day in enumerate(days))
    (tmp_path / "big.csv").write_text("product,day,price\n" + rows, encoding="utf-8")
    check = build("curve_snapshot", tmp_path, file="big.csv", band={"relative": 0.1},
                  keys={"product_code": "product", "delivery_start": {"column": "day", "chars": 10}})
    records = [deal(f"P{i % 10}", days[i % len(days)], 40.0 + i % 10) for i in range(1000)]

    assert sum(map(len, check.validate(records))) == 0
    assert best_of(5, lambda: check.validate(records)) < 0.005


# --- in a run --------------------------------------------------------------------------------------

CONNECTOR = sandbox_connector(page_size=25)
PIPELINE = "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"


def project_with_validators(project: EtrmflowProject, url: str, validators: str) -> EtrmflowProject:
    contract = (REPO / "contracts" / "trade.yml").read_text(encoding="utf-8")
    assert contract.count("\nrules:\n") == 1
    project.write({"connectors/vendor.yml": CONNECTOR, "pipelines/trades.yml": PIPELINE,
                   "contracts/trade.yml": contract.replace("\nrules:\n", f"\nvalidators:\n{validators}rules:\n")})
    project.env.update(SANDBOX_URL=url, SANDBOX_KEY="sandbox-key")
    return project


def test_reference_data_violations_reach_the_dead_letters(etrmflow_project: EtrmflowProject,
                                                          sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=50)
    project = project_with_validators(etrmflow_project, vendor.base_url, "  - {type: reference_data, field: currency, "
                                                                         "values: [EUR], message: not a euro trade}\n")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    flagged = {letter["record"]["trade_id"]: v["message"] for letter in project.dead_letters("trades")
               for v in letter["violations"] if v["keyword"] == "reference_data"}
    records = [trade(i, vendor.config.seed) for i in range(50)]
    expected = {r["trade_id"]: f"not a euro trade: {r['currency']!r} is not in the listed values (EUR)"
                for r in records if r.get("currency") not in ("EUR", None)}
    assert flagged == expected and len(expected) == 10


def test_a_missing_reference_file_fails_the_run_before_anything_is_fetched(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=10)
    project = project_with_validators(etrmflow_project, vendor.base_url, "  - {type: reference_data, field: "
                                      "counterparty_lei, file: reference/leis.csv, column: lei}\n")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    assert project.pipeline_result()["error"] == (
        f"validator 'reference_data' cannot start with its options: reference data file "
        f"{project.root}/reference/leis.csv does not exist")
    assert vendor.stats()["data_requests"] == 0
