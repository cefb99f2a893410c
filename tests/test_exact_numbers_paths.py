"""Numbers a double cannot hold, end to end: a price with more digits than a double (read as a
``JsonNumber`` that keeps the vendor's text) and an integer beyond 64 bits, through every path a
record takes: validation (schema keywords, ``x-etrmflow-decimal`` in arrays and ``$defs``, rules),
transform steps, every sink, dead letters and the commands that read them, resume and debug.

The vendor is a plain HTTP server on loopback serving exactly the bytes a test chooses, one body
per page (``?page=N``), and recording what is POSTed to it; the real CLI runs in a temp project.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from etrmflow.testing import EtrmflowProject, ScriptedRequest, ScriptedVendor

CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, price]
  properties:
    deal_id: {type: string}
    version: {type: integer}
    price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
    long: {type: number, x-etrmflow-decimal: {scale: 20, precision: 38}}
    qty: {type: number}
    legs:
      type: array
      items:
        type: object
        properties:
          price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
    fee: {$ref: "#/$defs/money"}
  $defs:
    money: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
"""

CONNECTOR = """\
name: vendor
base_url: "{{ env_var('VENDOR_URL') }}"
auth: {type: none}
streams:
  deals:
    path: /deals
    records: $.deals
    paginator: {type: page_number, param: page, start: 1, has_more: $.more}
"""


def pipeline(steps: str = "", sinks: str = "  - {type: sqlite, table: deals}\n", extra: str = "") -> str:
    text = "name: deals\nsource: {connector: vendor, stream: deals}\ncontract: deal\n"
    if steps:
        text += "transforms:\n" + steps
    return text + "sinks:\n" + sinks + extra


class Vendor:
    """Serves page N at ``GET ?page=N`` as ``{"deals": <records>, "more": <not last>, "next": <cursor>}``,
    where the cursor is the JSON number text leading to page N + 1 (``GET ?cursor=<text>``), and
    keeps every query and every POSTed body. ``hang_on``: the page that waits for ``release``."""

    def __init__(self) -> None:
        self.pages: list[str] = ["[]"]
        self.cursors: list[str] = []
        self.queries: list[dict[str, str]] = []
        self.posted: list[bytes] = []
        self.hang_on: int | None = None
        self.release = threading.Event()
        self.server = ScriptedVendor(self.answer)
        self.url = self.server.url

    def answer(self, request: ScriptedRequest) -> bytes:
        if request.method == "POST":
            self.posted.append(request.body)
            return b"{}"
        self.queries.append(request.query)
        number = self.page_number(request.query)
        if self.hang_on == number:
            self.release.wait(30)
        return self.body(number)

    def page_number(self, query: dict[str, str]) -> int:
        if "cursor" in query:
            return self.cursors.index(query["cursor"]) + 2 if query["cursor"] in self.cursors else 0
        return int(query.get("page", "1"))

    def body(self, number: int) -> bytes:
        records = self.pages[number - 1] if 1 <= number <= len(self.pages) else "[]"
        more = "true" if number < len(self.pages) else "false"
        cursor = self.cursors[number - 1] if 1 <= number <= len(self.cursors) else "null"
        return ('{"deals": ' + records + ', "more": ' + more + ', "next": ' + cursor + "}").encode()

    def serve(self, *pages: str, cursors: tuple[str, ...] = ()) -> None:
        self.pages, self.cursors = list(pages), list(cursors)

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    server = Vendor()
    yield server
    server.close()


@pytest.fixture
def project(etrmflow_project: EtrmflowProject, vendor: Vendor) -> EtrmflowProject:
    etrmflow_project.write({"contracts/deal.yml": CONTRACT, "connectors/vendor.yml": CONNECTOR,
                            "pipelines/deals.yml": pipeline()})
    etrmflow_project.env.update(VENDOR_URL=vendor.url)
    return etrmflow_project


def exact(text: str | bytes) -> Any:
    """JSON as the vendor meant it: every number exactly as written."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def letters(project: EtrmflowProject) -> list[Any]:
    file = project.path("target/dead_letter/deals.jsonl")
    lines = file.read_text(encoding="utf-8").splitlines() if file.exists() else []
    return [exact(line) for line in lines if line.strip() and "resolves" not in json.loads(line)]


def counts(project: EtrmflowProject) -> dict[str, int]:
    return project.pipeline_result("deals")["counts"]


def deal(deal_id: str, price: str = "1.5", **fields: str) -> str:
    """One record's JSON text, each value as given (numbers as the vendor writes them)."""
    parts = [f'"deal_id": "{deal_id}"', f'"price": {price}', *(f'"{k}": {v}' for k, v in fields.items())]
    return "{" + ", ".join(parts) + "}"


def page(*records: str) -> str:
    return "[" + ", ".join(records) + "]"


# --- validation ---------------------------------------------------------------------------------

LONG = "40.4500000000000001"
"""A price a double cannot hold: its double is 40.45, which would pass scale 2."""
HUGE = "18446744073709551617"
"""2**64 + 1: beyond 64 bits."""


@pytest.mark.parametrize("plain", [0, 40], ids=["alone", "among_40_plain_records"])
def test_x_etrmflow_decimal_judges_every_digit_in_arrays_defs_and_top_level(
        project: EtrmflowProject, vendor: Vendor, plain: int) -> None:
    bad = [deal("B-1", LONG), deal("B-2", legs=f'[{{"price": 1.5}}, {{"price": {LONG}}}]'),
           deal("B-3", fee=LONG), deal("B-4", long="1" + "0" * 18 + ".5")]
    good = [deal("G-1", long=LONG, legs='[{"price": 40.45}]', fee="2.5", qty="0.1")]
    filler = [deal(f"P-{k:02d}", f"{k}.25", qty=f"{k}.5", legs='[{"price": 1.25}]') for k in range(plain)]
    vendor.serve(page(*bad, *good, *filler))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert [letter["record"] for letter in letters(project)] == [exact(text) for text in bad]
    reasons = [[(v["pointer"], v["keyword"]) for v in letter["violations"]] for letter in letters(project)]
    assert reasons == [[("/price", "x-etrmflow-decimal")], [("/legs/1/price", "x-etrmflow-decimal")],
                       [("/fee", "x-etrmflow-decimal")], [("/long", "x-etrmflow-decimal")]]
    messages = [letter["violations"][0]["message"] for letter in letters(project)]
    assert messages[0] == f"{LONG} has more than 2 decimal places (x-etrmflow-decimal scale 2)"
    assert project.query("SELECT long, legs FROM deals WHERE deal_id = 'G-1'") == [
        ("40.45000000000000010000", '[{"price":40.45}]')]
    assert counts(project)["written"] == 1 + plain


LONG_DEFS_CONTRACT = CONTRACT.replace(
    "money: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}",
    "money: {type: number, x-etrmflow-decimal: {scale: 2, precision: 38}}")


def test_a_money_field_declared_through_defs_is_stored_at_its_scale_with_every_digit(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"contracts/deal.yml": LONG_DEFS_CONTRACT})
    vendor.serve(page(deal("D-1", fee="12345678901234567.89"), deal("D-2", fee="2.5")))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert project.query("SELECT deal_id, fee FROM deals ORDER BY deal_id") == [
        ("D-1", "12345678901234567.89"), ("D-2", "2.50")]


def test_valid_money_inside_an_array_longer_than_a_double_is_stored_with_every_digit(
        project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve(page(deal("D-1", legs='[{"price": 1234567890123456.78}, {"price": 40.45}]')))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    (legs,), = project.query("SELECT legs FROM deals")
    assert exact(legs) == [{"price": Decimal("1234567890123456.78")}, {"price": Decimal("40.45")}]


# --- schema keywords on such values: jsonschema's verdicts and messages ------------------------

KEYWORDS_CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, price]
  properties:
    deal_id: {type: string, pattern: "^[A-Z]-[0-9]+$"}
    price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
    version: {type: integer, minimum: 1, maximum: 18446744073709551616}
    qty: {type: number, exclusiveMinimum: 0, maximum: 100}
    code: {enum: [1, 2.5, 18446744073709551617]}
    flag: {const: 0.1}
    when: {type: string, format: date-time}
    text: {type: string, pattern: "^[a-z]+(?=x)"}
    cap: {type: number, minimum: 40.45, exclusiveMaximum: 100, x-etrmflow-decimal: {scale: 20, precision: 38}}
    band: {enum: [40.45, 50], x-etrmflow-decimal: {scale: 20, precision: 38}}
"""
KEYWORD_CONTRACTS = {
    "fast_path": KEYWORDS_CONTRACT,  # jsonschema-rs checks the batch; jsonschema what it cannot read
    "jsonschema_only": KEYWORDS_CONTRACT.replace(  # multipleOf sends every record to jsonschema
        "maximum: 100}", "maximum: 100, multipleOf: 0.5}").replace(
        "exclusiveMaximum: 100,", "exclusiveMaximum: 100, multipleOf: 0.05,"),
}

KEYWORD_RECORDS = [
    deal("A-1", version=HUGE),                                   # maximum: one above
    deal("A-2", version="-18446744073709551617"),                # minimum
    deal("A-3", version="1.0000000000000000001"),                # a long fraction is no integer
    deal("A-4", version="12345678901234567.0"),                  # a whole number: an integer
    deal("A-5", qty="100.00000000000000001"),                    # the double is 100: passes, as a double
    deal("A-6", qty="0.00000000000000000001"),                   # exclusiveMinimum; multipleOf
    deal("A-7", code=HUGE),                                      # in the enum, exactly
    deal("A-8", code="18446744073709551618"),                    # not in it
    deal("A-9", code="2.50000000000000000001"),                  # its double is 2.5: in it, as a double
    deal("A-10", flag="0.10000000000000000001", when='"2025-13-01T00:00:00Z"'),
    deal("A-11", text='"abcx"', qty="12.50000000000000000001"),
    deal("A-12", text='"ABC"', version="9223372036854775808"),
    deal("A-13", cap="40.4499999999999999", band="40.4500000000000001"),  # money: by every digit
    deal("A-14", cap="40.45000000000000000000", band="50.00000000000000000"),  # within both
]


def reference_violations(contract_text: str, record_text: str) -> list[tuple[str, str, str]]:
    """Plain jsonschema's verdict on the record (the reference), read as the vendor wrote it."""
    import yaml

    from etrmflow import jsontext
    from etrmflow.builtins.validators import build_format_checker
    from etrmflow.plugins import Registry
    from etrmflow.validation.schema_batch import SchemaBatch

    checker = build_format_checker(Registry.default(load_entry_points=False).format_checkers())
    batch = SchemaBatch(yaml.safe_load(contract_text)["schema"], checker)
    return batch.reference_violations(jsontext.loads(record_text))


@pytest.mark.parametrize("contract", list(KEYWORD_CONTRACTS))
@pytest.mark.parametrize("filler", [0, 40], ids=["alone", "among_40_plain_records"])
def test_schema_keywords_on_long_numbers_give_jsonschemas_verdicts_and_messages(
        project: EtrmflowProject, vendor: Vendor, filler: int, contract: str) -> None:
    project.write({"contracts/deal.yml": KEYWORD_CONTRACTS[contract],  # CSV holds integers of any length
                   "pipelines/deals.yml": pipeline(sinks="  - {type: csv, path: out/deals.csv}\n")})
    plain = [deal(f"P-{k}", f"{k}.5", version=str(k + 1), qty="1.5") for k in range(filler)]
    vendor.serve(page(*KEYWORD_RECORDS, *plain))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    found = {letter["record"]["deal_id"]: sorted((v["pointer"], v["keyword"], v["message"])
                                                for v in letter["violations"]) for letter in letters(project)}
    expected = {exact(text)["deal_id"]: reference_violations(KEYWORD_CONTRACTS[contract], text)
                for text in KEYWORD_RECORDS}
    assert found == {key: value for key, value in expected.items() if value}
    assert found["A-1"] == [("/version", "maximum",
                             "18446744073709551617 is greater than the maximum of 18446744073709551616")]
    assert found["A-3"] == [("/version", "type", "1.0000000000000000001 is not of type 'integer'")]
    assert "A-4" not in found and "A-7" not in found and "A-14" not in found
    assert found["A-13"][:2] == [("/band", "enum", "40.4500000000000001 is not one of [40.45, 50]"),
                                 ("/cap", "minimum", "40.4499999999999999 is less than the minimum of 40.45")]
    if contract == "jsonschema_only":  # the double 40.45 is a multiple of 0.05; the money is not
        assert found["A-13"][2:] == [("/cap", "multipleOf", "40.4499999999999999 is not a multiple of 0.05")]
        # a plain double whose shortest repr is the decimal sent: judged as jsonschema does
        assert found["A-6"] == [("/qty", "multipleOf", "1e-20 is not a multiple of 0.5")]
    assert found["A-8"] == [("/code", "enum", "18446744073709551618 is not one of [1, 2.5, 18446744073709551617]")]
    assert counts(project)["written"] == filler + len(KEYWORD_RECORDS) - len(found)
    with project.path("out/deals.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["deal_id"]: row for row in csv.DictReader(handle)}
    assert (rows["A-4"]["version"], rows["A-7"]["code"]) == ("12345678901234567", HUGE)


# --- rules: cross-field checks on numbers as sent ----------------------------------------------

RULES = """\
rules:
  - name: long_above_floor
    when: present(long)
    check: long > 40.45
  - name: long_not_the_floor
    when: present(long)
    check: long != 40.45
  - name: version_below_limit
    when: present(version)
    check: version < 18446744073709551617
  - name: qty_times_two
    when: present(qty)
    check: qty * 2 >= 1
  - name: long_not_a_long_literal
    when: present(long)
    check: long != 40.4500000000000002 and -long < -40.4
  - name: functions_read_every_digit
    when: present(long)
    check: abs(long) > 40.45 or min(40.45, long) < 40.45 or int(long) != 40
"""


@pytest.mark.parametrize("filler", [0, 40], ids=["per_record", "vectorised_batch"])
def test_rules_judge_long_numbers_and_huge_integers_as_sent(
        project: EtrmflowProject, vendor: Vendor, filler: int) -> None:
    project.write({"contracts/deal.yml": CONTRACT + RULES,
                   "pipelines/deals.yml": pipeline(sinks="  - {type: csv, path: out/deals.csv}\n")})
    plain = [deal(f"P-{k:02d}", f"{k}.5", long=f"{41 + k}.5", qty="1.5", version=str(k)) for k in range(filler)]
    vendor.serve(page(
        deal("R-1", long=LONG),                       # above 40.45 by 1e-16: both rules hold
        deal("R-2", long="40.45"),                    # breaks both
        deal("R-3", long="40.4499999999999999"),      # below: breaks long_above_floor (its double is 40.45)
        deal("R-4", version="18446744073709551616"),  # 2**64: holds
        deal("R-5", version=HUGE),                    # breaks version_below_limit
        deal("R-6", qty="0.50000000000000000001"),    # holds (the double 0.5 too)
        deal("R-7", qty="0.49999999999999999999"),    # breaks: 0.99999999999999999998 < 1
        deal("R-8", long="40.4500000000000002"),      # breaks the literal of as many digits
        *plain))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    broken = {letter["record"]["deal_id"]: [v["keyword"] for v in letter["violations"]]
              for letter in letters(project)}
    assert broken == {"R-2": ["rule:long_above_floor", "rule:long_not_the_floor", "rule:functions_read_every_digit"],
                      "R-3": ["rule:long_above_floor"], "R-5": ["rule:version_below_limit"],
                      "R-7": ["rule:qty_times_two"], "R-8": ["rule:long_not_a_long_literal"]}
    assert counts(project)["written"] == filler + 3


# --- dead letters and the commands that read them ----------------------------------------------

QUARANTINED = deal("Q-1", LONG, version=HUGE, legs='[{"price": 1.5, "mw": 0.10000000000000000001}]')
"""Invalid (price breaks scale 2), with a huge integer and a long number a double cannot hold."""


@pytest.mark.parametrize("store", ["jsonl", "sqlite"])
def test_a_dead_letter_keeps_every_digit_in_its_text_and_its_hash(
        project: EtrmflowProject, vendor: Vendor, store: str) -> None:
    extra = "dead_letter: {type: sqlite}\n" if store == "sqlite" else ""
    project.write({"pipelines/deals.yml": pipeline(extra=extra)})
    vendor.serve(page(QUARANTINED))

    assert project.run("run", "pipelines/deals.yml").exit_code == 0
    second = project.run("run", "pipelines/deals.yml")  # the same letter again: stored once

    assert second.exit_code == 0, second.output
    if store == "sqlite":
        records = [exact(text) for (text,) in project.query("SELECT record FROM dead_letters")]
    else:
        lines = project.path("target/dead_letter/deals.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1
        assert f'"price":{LONG}' in lines[0] and f'"version":{HUGE}' in lines[0]
        assert '"mw":0.10000000000000000001' in lines[0]
        records = [letter["record"] for letter in letters(project)]
        assert letters(project)[0]["record_sha256"] == hashlib.sha256(
            f'{{"deal_id":"Q-1","legs":[{{"mw":0.10000000000000000001,"price":1.5}}],"price":{LONG},'
            f'"version":{HUGE}}}'.encode()).hexdigest()
    assert records == [exact(QUARANTINED)]


def test_dlq_list_and_replay_read_long_numbers_exactly(project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"pipelines/deals.yml": pipeline(extra="dead_letter: {type: sqlite}\n")})
    replayed = deal("Q-1", LONG, version="9007199254740993", legs='[{"price": 1.5, "mw": 0.10000000000000000001}]')
    still_invalid = deal("Q-2", "1.005", long="40.450000000000000000001")
    vendor.serve(page(replayed, still_invalid))
    assert project.run("run", "pipelines/deals.yml").exit_code == 0

    listed = project.run("dlq", "list", "pipelines/deals.yml", "--format", "json")
    project.write({"contracts/deal.yml": CONTRACT.replace('version: "1"', 'version: "2"').replace(
        "price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}",
        "price: {type: number, x-etrmflow-decimal: {scale: 16, precision: 18}}")})
    replay = project.run("dlq", "replay", "pipelines/deals.yml")

    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 2, listed.output
    assert replay.exit_code == 0, replay.output
    # Q-1 passes now (2**53 + 1 stays that integer); Q-2's long still has 21 decimals
    (row,) = project.query("SELECT deal_id, price, version, legs FROM deals")
    assert row[:3] == ("Q-1", LONG, 9007199254740993)
    assert exact(row[3]) == [{"mw": Decimal("0.10000000000000000001"), "price": Decimal("1.5")}]
    still_open = [exact(text) for text, resolved in project.query(
        "SELECT record, resolved_at FROM dead_letters") if resolved is None]
    assert still_open == [exact(still_invalid)]


def test_dlq_show_prints_the_letter_with_every_digit(project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve(page(QUARANTINED))
    assert project.run("run", "pipelines/deals.yml").exit_code == 0
    (letter,) = letters(project)

    shown = project.run("dlq", "show", "pipelines/deals.yml", letter["record_sha256"][:12])

    assert shown.exit_code == 0, shown.output
    assert exact(shown.stdout)["record"] == exact(QUARANTINED)


def test_lineage_json_shows_a_letter_with_every_digit(project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve(page(QUARANTINED))
    assert project.run("run", "pipelines/deals.yml").exit_code == 0

    found = project.run("lineage", "pipelines/deals.yml", "Q-1", "--format", "json")

    assert found.exit_code == 0, found.output
    (letter,) = exact(found.stdout)["quarantined"]
    assert letter["record"] == exact(QUARANTINED)


def test_lineage_table_and_audit_verify_after_a_run_with_long_numbers(
        project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve(page(QUARANTINED, deal("G-1", long=LONG, legs='[{"price": 2.5, "mw": 0.10000000000000000001}]')),
                 page(deal("G-2", version="12345678901234567")))

    run = project.run("run", "pipelines/deals.yml")
    table = project.run("lineage", "pipelines/deals.yml", "Q-1")
    written = project.run("lineage", "pipelines/deals.yml", "G-1", "--format", "json")
    verified = project.run("audit", "verify")

    assert run.exit_code == 0, run.output
    assert table.exit_code == 0 and "Q-1" in table.stdout, table.output
    assert written.exit_code == 0, written.output
    assert exact(written.stdout)["written"][0]["values"]["long"] == "40.45000000000000010000"
    assert verified.exit_code == 0, verified.output
    assert project.query("SELECT deal_id, version FROM deals ORDER BY deal_id") == [
        ("G-1", None), ("G-2", 12345678901234567)]


# --- transform steps ---------------------------------------------------------------------------

MIXED_PAGE = page(
    deal("T-1", "2.5", long=LONG, version="9007199254740993", legs='[{"price": 1.5, "mw": 0.10000000000000000001}]'),
    deal("T-2", "3.5", long="40.45", version="2", legs='[{"price": 2.5, "mw": 0.2}]'),
    deal("T-3", "4.5", long="40.4499999999999999", version="3"),
)


def read_csv(project: EtrmflowProject, path: str = "out/deals.csv") -> list[dict[str, str]]:
    with project.path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


DERIVE = ("  - {type: filter, where: \"long > 40.45 and long in [40.4500000000000001, 1] and price >= 2.5\"}\n"
          "  - {type: derive, columns: {excess: long - 40.45, total: long + price, twice: long * 2}}\n")


def test_derive_and_filter_compute_with_declared_long_decimals_exactly(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"pipelines/deals.yml": pipeline(DERIVE)})
    vendor.serve(MIXED_PAGE)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    (row,) = project.query("SELECT deal_id, version, long, excess, total, twice, legs FROM deals")
    assert row[:3] == ("T-1", 9007199254740993, "40.45000000000000010000")
    assert tuple(map(Decimal, row[3:6])) == (
        Decimal("1E-16"), Decimal("42.9500000000000001"), Decimal("80.9000000000000002"))
    assert exact(row[6]) == [{"mw": Decimal("0.10000000000000000001"), "price": Decimal("1.5")}]


def test_filter_and_derive_meet_declared_money_and_floats_as_written(project: EtrmflowProject, vendor: Vendor) -> None:
    steps = ("  - {type: filter, where: \"price >= 40.45 and price <= 40.45 and price == 40.45 and price in [40.45]\"}\n"
             "  - {type: derive, columns: {notional: price * qty, spread: price - 40.4}}\n")
    project.write({"pipelines/deals.yml": pipeline(steps)})
    vendor.serve(page(deal("F-1", "40.45", qty="0.1"), deal("F-2", "40.46", qty="0.1"), deal("F-3", "40.44", qty="0.1")))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert project.query("SELECT deal_id, price, notional, spread FROM deals") == [("F-1", "40.45", "4.045", "0.05")]


def test_csv_writes_money_a_step_computed_with_every_digit(project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"pipelines/deals.yml": pipeline(DERIVE, "  - {type: csv, path: out/deals.csv}\n")})
    vendor.serve(MIXED_PAGE)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    (row,) = read_csv(project)
    assert Decimal(row["total"]) == Decimal("42.9500000000000001")


WHOLE_DATASET_STEPS = {
    "dedupe": "  - {type: dedupe, key: [deal_id], order_by: [version]}\n",
    "python": "  - {type: python, function: \"exact_steps:keep\"}\n",
    "dedupe_then_python": ("  - {type: dedupe, key: [deal_id], order_by: [version], chunk_rows: 1}\n"
                           "  - {type: python, function: \"exact_steps:keep\"}\n"),
}
PYTHON_STEP = '''\
def keep(frame):
    """Checks that the step sees the vendor's digits in nested values, and passes them on."""
    for legs in frame["legs"].dropna():
        for leg in legs:
            assert "mw" not in leg or repr(leg["mw"]) in ("0.10000000000000000001", "0.2"), repr(leg["mw"])
    return frame
'''


@pytest.mark.parametrize("steps", list(WHOLE_DATASET_STEPS))
def test_staged_and_python_steps_pass_long_numbers_and_huge_integers_through(
        project: EtrmflowProject, vendor: Vendor, steps: str) -> None:
    project.write({"exact_steps.py": PYTHON_STEP,
                   "pipelines/deals.yml": pipeline(WHOLE_DATASET_STEPS[steps], "  - {type: csv, path: out/deals.csv}\n")})
    vendor.serve(MIXED_PAGE, page(deal("T-1", "2.5", long=LONG, version=HUGE,
                                       legs='[{"price": 1.5, "mw": 0.10000000000000000001}]')))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    rows = {row["deal_id"]: row for row in read_csv(project)}
    newest = rows["T-1"]
    if steps != "python":
        assert len(rows) == 3
        assert (newest["version"], newest["long"]) == (HUGE, "40.45000000000000010000")
    assert exact(newest["legs"]) == [{"mw": Decimal("0.10000000000000000001"), "price": Decimal("1.5")}]
    assert rows["T-3"]["long"] == "40.44999999999999990000"


def test_cast_to_string_writes_an_integer_beyond_64_bits_with_every_digit(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"pipelines/deals.yml": pipeline("  - {type: cast, columns: {version: string}}\n",
                                                   "  - {type: csv, path: out/deals.csv}\n")})
    vendor.serve(page(deal("C-1", version=HUGE), deal("C-2", version="2")))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert [(row["deal_id"], row["version"]) for row in read_csv(project)] == [("C-1", HUGE), ("C-2", "2")]


# --- the HTTP write-back sink, drift --------------------------------------------------------------

def test_the_http_sink_posts_long_numbers_and_huge_integers_as_sent(project: EtrmflowProject, vendor: Vendor) -> None:
    sink = "  - {type: http, connector: vendor, path: /instructions, columns: [deal_id, long, version, legs, qty]}\n"
    project.write({"pipelines/deals.yml": pipeline(sinks=sink)})
    vendor.serve(page(deal("H-1", long=LONG, version=HUGE, qty="0.5",
                           legs='[{"price": 1.5, "mw": 0.10000000000000000001}]')))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    (body,) = vendor.posted
    assert exact(body) == [{"deal_id": "H-1", "long": Decimal("40.45000000000000010000"), "version": Decimal(HUGE),
                            "qty": Decimal("0.5"),
                            "legs": [{"mw": Decimal("0.10000000000000000001"), "price": Decimal("1.50")}]}]
    assert b'"long":40.45000000000000010000' in body and b'"mw":0.10000000000000000001' in body


def test_undeclared_fields_holding_long_numbers_count_as_drift_and_keep_their_digits(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"pipelines/deals.yml": pipeline(sinks="  - {type: csv, path: out/deals.csv}\n")})
    vendor.serve(page(deal("U-1", extra_id=HUGE, extra_nested='{"rate": 0.10000000000000000001}'),
                      deal("U-2", extra_id="7")))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert project.pipeline_result("deals")["drift"] == {"extra_id": 2, "extra_nested": 1}
    rows = {row["deal_id"]: row for row in read_csv(project)}
    assert rows["U-1"]["extra_id"] == HUGE
    assert exact(rows["U-1"]["extra_nested"]) == {"rate": Decimal("0.10000000000000000001")}


# --- integers beyond 2**53 in a column pandas would hold as doubles ------------------------------

def test_an_integer_beyond_2_53_beside_a_whole_float_is_stored_exactly(project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve(page(deal("I-1", version="9007199254740993"), deal("I-2", version="2.0"),
                      deal("I-3", version="12345678901234567.0")))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert project.query("SELECT deal_id, version, typeof(version) FROM deals ORDER BY deal_id") == [
        ("I-1", 9007199254740993, "integer"), ("I-2", 2, "integer"), ("I-3", 12345678901234567, "integer")]


def test_a_number_field_never_rounds_an_integer_beyond_2_53_held_beside_a_fraction(
        project: EtrmflowProject, vendor: Vendor) -> None:
    records = page(deal("N-1", qty="9007199254740993"), deal("N-2", qty="2.5"))
    vendor.serve(records)

    refused = project.run("run", "pipelines/deals.yml")  # a REAL column cannot hold it: refused, not rounded
    project.write({"pipelines/deals.yml": pipeline(sinks="  - {type: csv, path: out/deals.csv}\n")})
    written = project.run("run", "pipelines/deals.yml")

    assert refused.exit_code == 1 and "9007199254740993 cannot be stored as REAL without rounding" in refused.output
    assert written.exit_code == 0, written.output
    assert [(row["deal_id"], row["qty"]) for row in read_csv(project)] == [("N-1", "9007199254740993"), ("N-2", "2.5")]


# --- resume after kill -9, and debug -------------------------------------------------------------

CURSOR_CONNECTOR = CONNECTOR.replace("{type: page_number, param: page, start: 1, has_more: $.more}",
                                     "{type: cursor, cursor: $.next, param: cursor}")
CURSORS = ("123456789012345678901234567890", "1700000000.12345678901234567")
"""Numeric cursors a double cannot hold: a vendor's id beyond 64 bits, then a long fraction."""
PAGES = (page(QUARANTINED, deal("K-1", long=LONG, version="9007199254740993")),
         page(deal("K-2", long="40.45000000000000000001", qty="0.10000000000000000001")),
         page(deal("K-3", "3.25", legs='[{"price": 1.5, "mw": 0.10000000000000000001}]')))


def kill_after(project: EtrmflowProject, vendor: Vendor, pages: int) -> None:
    """Run the pipeline as a child process; kill -9 it once ``pages`` pages are checkpointed
    (the vendor hangs on the next one)."""
    vendor.hang_on = pages + 1
    env = {**os.environ, **{k: v for k, v in project.env.items() if v is not None},
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "etrmflow", "run", "pipelines/deals.yml"], cwd=project.root,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = project.path("target/state/deals.json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (state.exists() and json.loads(state.read_text())["pages_done"] >= pages):
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    vendor.hang_on = None
    vendor.release.set()
    assert json.loads(state.read_text())["pages_done"] == pages


def test_resume_after_kill_9_follows_numeric_cursors_as_sent_and_loads_every_record_once(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"connectors/vendor.yml": CURSOR_CONNECTOR})
    vendor.serve(*PAGES, cursors=CURSORS)
    kill_after(project, vendor, pages=2)
    vendor.queries.clear()

    resumed = project.run("run", "--resume", "pipelines/deals.yml")

    assert resumed.exit_code == 0, resumed.output
    assert vendor.queries == [{"cursor": CURSORS[1]}]  # page 3 only, by its cursor's every digit
    assert project.query("SELECT deal_id, long, version, qty FROM deals ORDER BY deal_id") == [
        ("K-1", "40.45000000000000010000", 9007199254740993, None),
        ("K-2", "40.45000000000000000001", None, 0.1), ("K-3", None, None, None)]
    assert [letter["record"] for letter in letters(project)] == [exact(QUARANTINED)]


def test_debug_fetches_a_page_of_long_numbers_and_shows_the_next_cursor_as_sent(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"connectors/vendor.yml": CURSOR_CONNECTOR})
    vendor.serve(*PAGES, cursors=CURSORS)

    result = project.run("debug", "vendor")

    assert result.exit_code == 0, result.output
    assert "2 record(s) found at $.deals" in result.output
    assert f"cursor={CURSORS[0]}" in result.output


# --- Parquet, CSV and PostgreSQL ----------------------------------------------------------------

DSN = ("postgresql://postgres:{{ secret('PG_PASSWORD') }}@127.0.0.1:{{ env_var('PG_PORT') }}"
       "/{{ env_var('PG_DATABASE') }}")
SINK_PAGE = page(deal("S-1", "2.5", long=LONG, fee="12345678901234567.89", version="9007199254740993",
                      qty="0.10000000000000000001", legs=f'[{{"price": 1.5, "mw": 0.10000000000000000001, "id": {HUGE}}}]'),
                 deal("S-2", "3", long="1", fee="2.5", version="2", qty="0.5"))
"""Valid: long has scale 20 and precision 38, fee (a $ref) precision 38."""


def test_parquet_and_csv_store_long_decimals_and_defs_money_exactly(project: EtrmflowProject, vendor: Vendor) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sinks = "  - {type: parquet, path: out/deals}\n  - {type: csv, path: out/deals.csv}\n"
    project.write({"contracts/deal.yml": LONG_DEFS_CONTRACT, "pipelines/deals.yml": pipeline(sinks=sinks)})
    vendor.serve(SINK_PAGE)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    table = pq.read_table(project.path("out/deals"))
    assert (table.schema.field("long").type, table.schema.field("fee").type) == (
        pa.decimal128(38, 20), pa.decimal128(38, 2))
    stored = {row["deal_id"]: (row["long"], row["fee"], row["version"]) for row in table.to_pylist()}
    assert stored == {"S-1": (Decimal(LONG), Decimal("12345678901234567.89"), 9007199254740993),
                      "S-2": (Decimal(1), Decimal("2.5"), 2)}
    assert exact(table.to_pylist()[0]["legs"]) == [
        {"price": Decimal("1.5"), "mw": Decimal("0.10000000000000000001"), "id": Decimal(HUGE)}]
    rows = {row["deal_id"]: (row["long"], row["fee"], row["version"]) for row in read_csv(project)}
    assert rows == {"S-1": ("40.45000000000000010000", "12345678901234567.89", "9007199254740993"),
                    "S-2": ("1.00000000000000000000", "2.50", "2")}


def test_postgres_stores_long_decimals_and_defs_money_as_numeric_with_every_digit(
        project: EtrmflowProject, vendor: Vendor, postgresql_database: Any) -> None:
    sink = f'  - {{type: postgres, dsn: "{DSN}", schema: exact, table: deals, mode: upsert}}\n'
    project.write({"contracts/deal.yml": LONG_DEFS_CONTRACT, "pipelines/deals.yml": pipeline(sinks=sink)})
    project.env.update(PG_PASSWORD=postgresql_database.password, PG_PORT=str(postgresql_database.port),
                       PG_DATABASE=postgresql_database.dbname)
    vendor.serve(SINK_PAGE)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    kinds = dict(postgresql_database.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'exact'"))
    assert (kinds["long"], kinds["fee"], kinds["version"]) == ("numeric", "numeric", "bigint")
    stored = postgresql_database.query("SELECT deal_id, long::text, fee::text, version FROM exact.deals ORDER BY 1")
    assert stored == [("S-1", "40.45000000000000010000", "12345678901234567.89", 9007199254740993),
                      ("S-2", "1.00000000000000000000", "2.50", 2)]
    (legs,), = postgresql_database.query("SELECT legs::text FROM exact.deals WHERE deal_id = 'S-1'")
    assert exact(legs) == [{"price": Decimal("1.5"), "mw": Decimal("0.10000000000000000001"), "id": Decimal(HUGE)}]


@pytest.mark.parametrize("depth, exit_code", [(1000, 0), (1100, 1)])
def test_a_page_with_a_long_number_is_read_as_deep_as_orjson_reads_and_refused_beyond_with_a_message(
        project: EtrmflowProject, vendor: Vendor, depth: int, exit_code: int) -> None:
    project.write({"connectors/vendor.yml": CONNECTOR.replace("streams:", "defaults:\n  retry: {max_attempts: 1}\nstreams:")})
    vendor.serve(page(deal("D-1", note="[" * depth + LONG + "]" * depth)))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == exit_code, result.output
    assert not project.path("target/crash.log").exists()
    if exit_code:
        assert "malformed JSON" in result.output
    else:
        assert project.pipeline_result("deals")["counts"]["fetched"] == 1


def test_lineage_finds_a_letter_by_a_whole_key_number_written_with_a_fraction_of_zeros(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"contracts/deal.yml": CONTRACT.replace("primary_key: [deal_id]", "primary_key: [deal_id, version]")})
    vendor.serve(page(deal("L-1", "1.005", version="12345678901234567.0")))
    assert project.run("run", "pipelines/deals.yml").exit_code == 0

    found = project.run("lineage", "pipelines/deals.yml", "L-1", "12345678901234567")
    rounded = project.run("lineage", "pipelines/deals.yml", "L-1", "12345678901234568")

    assert found.exit_code == 0, found.output
    assert rounded.exit_code == 1, rounded.output


def test_a_numeric_secret_echoed_as_a_long_number_never_reaches_a_dead_letter(
        project: EtrmflowProject, vendor: Vendor) -> None:
    key = "98765432109876543210"
    project.write({"connectors/vendor.yml": CONNECTOR.replace(
        "auth: {type: none}", "auth: {type: api_key, in: query, name: k, value: \"{{ secret('VENDOR_KEY') }}\"}")})
    project.env["VENDOR_KEY"] = key
    vendor.serve(page(deal("E-1", echo=key)))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert [letter["violations"][-1]["keyword"] for letter in letters(project)] == ["x-etrmflow-secret"]
    assert project.files_containing(key) == []


def test_aggregate_sums_long_money_and_huge_integers_exactly_across_pages(
        project: EtrmflowProject, vendor: Vendor) -> None:
    steps = ("  - type: aggregate\n    group_by: [price]\n"
             "    measures: {total: {sum: long}, top: {max: long}, versions: {sum: version}}\n")
    project.write({"pipelines/deals.yml": pipeline(steps, "  - {type: csv, path: out/deals.csv}\n")})
    vendor.serve(page(deal("A-1", long=LONG, version=HUGE), deal("A-2", long="40.4500000000000002", version="1")),
                 page(deal("A-3", long="0.00000000000000000001", version=HUGE)))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    (row,) = read_csv(project)
    assert (Decimal(row["total"]), Decimal(row["top"]), row["versions"]) == (
        Decimal("80.90000000000000030001"), Decimal("40.4500000000000002"), str(2 * (2**64 + 1) + 1))
