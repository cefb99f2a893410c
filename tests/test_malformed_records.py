"""Malformed and unusual records through validation and quarantine: every record a vendor sends is either loaded
or quarantined, once, unaltered; dead letters keep what the vendor sent and no secret.

The vendor here is a plain HTTP server on loopback serving exactly the bytes a test chooses (the
sandbox vendor only serves well-formed trades), read by the real CLI in a temp project.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from etrmflow.testing import EtrmflowProject, ScriptedVendor

SECRET = "s3cr3t-Token-7f1e"
"""The vendor key: a dead letter must never hold it."""

CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, version, price]
  additionalProperties: false
  properties:
    deal_id: {type: string, pattern: "^D-[0-9]+$"}
    version: {type: integer, minimum: 1}
    price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
    note: {type: string}
"""

CONNECTOR = """\
name: vendor
base_url: "{{ env_var('VENDOR_URL') }}"
auth: {type: api_key, in: query, name: k, value: "{{ secret('VENDOR_KEY') }}"}
streams:
  deals:
    path: /deals
    records: $.deals
    paginator: {type: single}
"""


def pipeline(on_invalid: str = "") -> str:
    return ("name: deals\nsource: {connector: vendor, stream: deals}\ncontract: deal\n"
            "sinks:\n  - {type: sqlite, table: deals}\n" + on_invalid)


class Vendor:
    """Serves ``body`` (bytes, exactly as set) at every GET."""

    def __init__(self) -> None:
        self.body = b'{"deals": []}'
        self.server = ScriptedVendor(lambda request: self.body)
        self.url = self.server.url

    def serve(self, records_text: str) -> None:
        """The page body: ``{"deals": <records_text>}`` byte for byte."""
        self.body = ('{"deals": ' + records_text + "}").encode()

    def close(self) -> None:
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
    etrmflow_project.env.update(VENDOR_URL=vendor.url, VENDOR_KEY=SECRET)
    return etrmflow_project


def exact(text: str) -> Any:
    """JSON as the vendor meant it: numbers exactly as written."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def exact_letters(project: EtrmflowProject) -> list[Any]:
    file = project.path("target/dead_letter/deals.jsonl")
    lines = file.read_text(encoding="utf-8").splitlines() if file.exists() else []
    return [exact(line) for line in lines if line.strip() and "resolves" not in json.loads(line)]


def loaded(project: EtrmflowProject) -> list[tuple[Any, ...]]:
    if "deals" not in project.tables():
        return []
    return project.query("SELECT deal_id, version, price FROM deals ORDER BY deal_id")


def counts(project: EtrmflowProject) -> dict[str, int]:
    return project.pipeline_result("deals")["counts"]


# --- malformed records: each one loaded or quarantined, as sent ----------------------------------

MALFORMED = [
    '[1, 2]', '"D-1"', 'null', '42', 'true', '{}',
    '{"deal_id": "D-2", "version": 1, "price": {"amount": 1}}',
    '{"deal_id": ["D-3"], "version": 1, "price": 1.5}',
    '{"deal_id": "D-4", "version": 1, "price": 1.5, "note": "nul\\u0000inside"}',
    '{"deal_id": "D-5", "version": 1.5, "price": 1.5}',
    '{"deal_id": "D-6", "version": 1, "price": 40.455}',
    '{"deal_id": "D-7", "version": 1, "price": 40.45}',
    '{"deal_id": "D-7", "version": 1, "price": 40.45}',
]


def test_every_malformed_record_is_quarantined_as_sent_and_the_rest_loaded_once(
        project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve("[" + ", ".join(MALFORMED) + "]")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    got = counts(project)
    assert (got["fetched"], got["valid"], got["quarantined"]) == (13, 3, 10)
    letters = exact_letters(project)
    sent_invalid = [exact(text) for text in MALFORMED[:8] + MALFORMED[9:11]]  # D-4 (NUL) is valid
    assert [letter["record"] for letter in letters] == sent_invalid
    assert all(letter["violations"] for letter in letters)
    assert loaded(project) == [("D-4", 1, "1.50"), ("D-7", 1, "40.45")]
    note = project.query("SELECT note FROM deals WHERE deal_id = 'D-4'")
    assert note == [("nul\x00inside",)]
    assert SECRET not in project.path("target/dead_letter/deals.jsonl").read_text(encoding="utf-8")


def test_a_page_where_every_record_is_invalid_loads_nothing_and_quarantines_all(
        project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve('[null, [], "x", {"deal_id": "D-1"}]')

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    got = counts(project)
    assert (got["fetched"], got["valid"], got["quarantined"], got["written"]) == (4, 0, 4, 0)
    assert [letter["record"] for letter in exact_letters(project)] == [None, [], "x", {"deal_id": "D-1"}]
    assert loaded(project) == []


def test_the_sqlite_dead_letter_table_keeps_malformed_records_as_sent(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"pipelines/deals.yml": pipeline() + "dead_letter: {type: sqlite}\n"})
    vendor.serve("[" + ", ".join(MALFORMED) + "]")

    first = project.run("run", "pipelines/deals.yml")
    second = project.run("run", "pipelines/deals.yml")

    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    stored = project.query("SELECT record, violations, request_url FROM dead_letters ORDER BY id")
    assert [exact(record) for record, _, _ in stored] == [exact(t) for t in MALFORMED[:8] + MALFORMED[9:11]]
    assert all(json.loads(violations) for _, violations, _ in stored)
    assert not any(SECRET in url for _, _, url in stored)
    assert loaded(project) == [("D-4", 1, "1.50"), ("D-7", 1, "40.45")]


# --- on_invalid: a failed run keeps and audits its dead letters, and a rerun loads nothing twice --

def audit_events(project: EtrmflowProject, name: str) -> list[dict[str, Any]]:
    file = project.path("target/audit/audit.jsonl")
    entries = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [entry for entry in entries if entry["event"] == name]


PAGE = '[{"deal_id": "D-1", "version": 1, "price": 1.5}, {"deal_id": "D-2", "version": 0, "price": 2.5}]'
FIXED = '[{"deal_id": "D-1", "version": 1, "price": 1.5}, {"deal_id": "D-2", "version": 1, "price": 2.5}]'


@pytest.mark.parametrize("policy, loads_page", [
    ("on_invalid: {action: fail}\n", False),
    ("on_invalid: {action: quarantine, max_count: 0}\n", True),
    ("on_invalid: {action: quarantine, max_ratio: 0.1}\n", True),
])
def test_a_run_failed_by_its_invalid_policy_keeps_audits_and_never_doubles(
        project: EtrmflowProject, vendor: Vendor, policy: str, loads_page: bool) -> None:
    project.write({"pipelines/deals.yml": pipeline(policy)})
    vendor.serve(PAGE)

    first = project.run("run", "pipelines/deals.yml")
    second = project.run("run", "pipelines/deals.yml")

    assert (first.exit_code, second.exit_code) == (1, 1), first.output + second.output
    letters = exact_letters(project)
    assert [letter["record"] for letter in letters] == [exact(PAGE)[1]]  # stored once, kept
    quarantined = audit_events(project, "batch_quarantined")
    assert [(e["quarantined"], e["new"]) for e in quarantined] == [(1, 1), (1, 0)]
    assert quarantined[0]["batch_id"] == letters[0]["batch_id"]
    assert loaded(project) == ([("D-1", 1, "1.50")] if loads_page else [])

    vendor.serve(FIXED)
    fixed = project.run("run", "pipelines/deals.yml")

    assert fixed.exit_code == 0, fixed.output
    assert loaded(project) == [("D-1", 1, "1.50"), ("D-2", 1, "2.50")]
    assert len(exact_letters(project)) == 1


# --- dlq replay of malformed letters: resolved ones load once, the rest stay open ----------------

def test_replay_after_a_contract_fix_loads_each_record_once_and_never_chokes_on_non_objects(
        project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve('[null, [1], "D-9", {"deal_id": "D-6", "version": 1, "price": 40.455}, '
                 '{"deal_id": "D-8", "version": 1, "price": 0.001}]')
    assert project.run("run", "pipelines/deals.yml").exit_code == 0
    project.write({"contracts/deal.yml": CONTRACT.replace('version: "1"', 'version: "2"')
                   .replace("scale: 2,", "scale: 3,")})

    first = project.run("dlq", "replay", "pipelines/deals.yml")
    after_first = project.path("target/dead_letter/deals.jsonl").read_bytes()
    second = project.run("dlq", "replay", "pipelines/deals.yml")

    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    assert loaded(project) == [("D-6", 1, "40.455"), ("D-8", 1, "0.001")]
    report = project.read_json("target/dlq_replay_results.json")
    assert report["counts"] == {"letters": 3, "replayed": 3, "valid": 0, "still_invalid": 3, "resolved": 0}
    assert project.path("target/dead_letter/deals.jsonl").read_bytes() == after_first
    resolved = [json.loads(line) for line in after_first.decode().splitlines() if '"resolves"' in line]
    assert len(resolved) == 2


# --- numbers a double cannot hold: judged and kept by every digit the vendor sent -----------------

LONG_NUMBERS_CONTRACT = CONTRACT.replace(
    "version: {type: integer, minimum: 1}", "version: {type: integer, minimum: 1, maximum: 1000000}").replace(
    "note: {type: string}", "note: {type: string}\n    notional: {type: number, x-etrmflow-decimal: {scale: 2, precision: 38}}")

LONG_NUMBERS = [
    '{"deal_id": "D-1", "version": 1, "price": 40.4500000000000001}',
    '{"deal_id": "D-2", "version": 1, "price": 40.4500000000000000}',
    '{"deal_id": "D-3", "version": 18446744073709551617, "price": 1.5}',
    '{"deal_id": "D-4", "version": 1.0000000000000000001, "price": 1.5}',
    '{"deal_id": "D-5", "version": 1, "price": 1.5, "notional": 12345678901234567.89}',
    '{"deal_id": "D-6", "version": -9223372036854775809, "price": 1.5}',
    '{"deal_id": "D-7", "version": 1, "price": 40.450000000000003}',  # the double 40.45, as %.17g prints it
]


@pytest.mark.parametrize("dead_letter", ["", "dead_letter: {type: sqlite}\n"])
def test_a_number_longer_than_a_double_is_judged_by_every_digit_and_kept_as_sent(
        project: EtrmflowProject, vendor: Vendor, dead_letter: str) -> None:
    project.write({"contracts/deal.yml": LONG_NUMBERS_CONTRACT, "pipelines/deals.yml": pipeline(dead_letter)})
    vendor.serve("[" + ", ".join(LONG_NUMBERS) + "]")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    got = counts(project)
    assert (got["fetched"], got["valid"], got["quarantined"]) == (7, 3, 4)
    assert loaded(project) == [("D-2", 1, "40.45"), ("D-5", 1, "1.50"), ("D-7", 1, "40.45")]
    assert project.query("SELECT notional FROM deals WHERE deal_id = 'D-5'") == [("12345678901234567.89",)]
    if dead_letter:
        records = [exact(text) for (text,) in project.query("SELECT record FROM dead_letters ORDER BY id")]
    else:
        records = [letter["record"] for letter in exact_letters(project)]
    assert records == [exact(LONG_NUMBERS[k]) for k in (0, 2, 3, 5)]
    reasons = project.query("SELECT violations FROM dead_letters ORDER BY id") if dead_letter else []
    assert all("x-etrmflow-decimal" in text for text, in reasons[:1])


def test_a_letter_replays_with_the_digits_it_was_sent_with(project: EtrmflowProject, vendor: Vendor) -> None:
    vendor.serve('[' + LONG_NUMBERS[0] + ']')
    assert project.run("run", "pipelines/deals.yml").exit_code == 0
    assert loaded(project) == []
    project.write({"contracts/deal.yml": CONTRACT.replace('version: "1"', 'version: "2"')
                   .replace("scale: 2, precision: 18", "scale: 16, precision: 18")})

    replay = project.run("dlq", "replay", "pipelines/deals.yml")

    assert replay.exit_code == 0, replay.output
    assert loaded(project) == [("D-1", 1, "40.4500000000000001")]


BEYOND_64_BITS = ('[{"deal_id": "D-1", "version": 18446744073709551617, "price": 1.5}, '
                  '{"deal_id": "D-2", "version": 2, "price": 1.5}]')


@pytest.mark.parametrize("sink, error", [
    ("{type: sqlite, table: deals}", "too large to convert to SQLite INTEGER"),
    ("{type: parquet, path: out/deals}", "too large to convert"),
])
def test_an_integer_a_sink_cannot_hold_fails_the_page_rather_than_round_it(
        project: EtrmflowProject, vendor: Vendor, sink: str, error: str) -> None:
    project.write({"pipelines/deals.yml": pipeline().replace("{type: sqlite, table: deals}", sink)})
    vendor.serve(BEYOND_64_BITS)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert error in result.output
    assert loaded(project) == []


def test_csv_writes_an_integer_beyond_64_bits_with_every_digit(project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"pipelines/deals.yml": pipeline().replace("{type: sqlite, table: deals}",
                                                             "{type: csv, path: out/deals.csv}")})
    vendor.serve(BEYOND_64_BITS)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    rows = project.path("out/deals.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[:3] for row in rows[1:]] == [["D-1", "18446744073709551617", "1.50"], ["D-2", "2", "1.50"]]


# --- a record that echoes a credential: quarantined, masked in its letter, in no file --------------

ECHOING = [
    '{"deal_id": "D-1", "version": 1, "price": 1.5, "note": "https://vendor.example/deals?k=' + SECRET + '"}',
    '{"deal_id": "D-2", "version": 0, "price": 2.5, "note": "' + SECRET + '"}',
    '{"deal_id": "D-3", "version": 1, "price": 3.5, "note": "\\u0073' + SECRET[1:] + '"}',
    '{"deal_id": "D-4", "version": 1, "price": 4.5, "note": "plain"}',
]


def files_holding(root: Any, text: str) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


@pytest.mark.parametrize("dead_letter", ["", "dead_letter: {type: sqlite}\n"])
@pytest.mark.parametrize("records", [ECHOING, ECHOING[2:]], ids=["plain", "unicode-escaped-only"])
def test_a_record_echoing_a_secret_is_quarantined_and_its_letter_masked(
        project: EtrmflowProject, vendor: Vendor, dead_letter: str, records: list[str]) -> None:
    assert SECRET[0] == "s"  # the escaped record spells it \u0073...
    project.write({"pipelines/deals.yml": pipeline(dead_letter)})
    vendor.serve("[" + ", ".join(records) + "]")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert loaded(project) == [("D-4", 1, "4.50")]
    assert SECRET not in result.output
    assert files_holding(project.path("."), SECRET) == []
    if dead_letter:
        stored = project.query("SELECT record, violations FROM dead_letters ORDER BY id")
        letters = [{"record": json.loads(r), "violations": json.loads(v)} for r, v in stored]
    else:
        letters = exact_letters(project)
    assert len(letters) == len(records) - 1
    for letter in letters:
        assert "***" in letter["record"]["note"]
        assert "x-etrmflow-secret" in [v["keyword"] for v in letter["violations"]]
    if len(records) == len(ECHOING):
        assert letters[0]["record"]["note"] == "https://vendor.example/deals?k=***"
        assert {v["keyword"] for v in letters[1]["violations"]} == {"minimum", "x-etrmflow-secret"}


# --- records nested deeper than orjson writes (254 levels; it reads 1,024) -----------------------

@pytest.mark.parametrize("depth", [300, 1000])
def test_a_record_nested_deeper_than_orjson_writes_is_loaded_or_quarantined_as_sent(
        project: EtrmflowProject, vendor: Vendor, depth: int) -> None:
    project.write({"contracts/deal.yml": CONTRACT.replace("note: {type: string}", "note: {type: string}\n    payload: {}")})
    deep = "[" * depth + '{"a": 18446744073709551617}' + "]" * depth
    vendor.serve('[{"deal_id": "D-1", "version": 1, "price": 1.5, "payload": ' + deep + '}, '
                 '{"deal_id": "D-2", "version": 0, "price": 2.5, "payload": ' + deep + '}]')

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert loaded(project) == [("D-1", 1, "1.50")]
    compact = deep.replace(" ", "")
    assert project.query("SELECT payload FROM deals") == [(compact,)]
    (line,) = project.path("target/dead_letter/deals.jsonl").read_text(encoding="utf-8").splitlines()
    assert f'"payload":{compact}' in line and '"deal_id":"D-2"' in line


def test_a_number_key_longer_than_a_double_is_quarantined_rather_than_merged_with_another(
        project: EtrmflowProject, vendor: Vendor) -> None:
    project.write({"contracts/deal.yml": CONTRACT.replace("primary_key: [deal_id]", "primary_key: [deal_id, rate]")
                   .replace("note: {type: string}", "note: {type: string}\n    rate: {type: number}")})
    sent = ['{"deal_id": "D-1", "version": 1, "price": 1.5, "rate": 0.10000000000000000001}',
            '{"deal_id": "D-1", "version": 1, "price": 2.5, "rate": 0.10000000000000000002}',
            '{"deal_id": "D-1", "version": 1, "price": 3.5, "rate": 0.10000000000000001}']  # the double 0.1, as %.17g
    vendor.serve("[" + ", ".join(sent) + "]")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert project.query("SELECT deal_id, price, rate FROM deals") == [("D-1", "3.50", 0.1)]
    letters = exact_letters(project)
    assert [letter["record"] for letter in letters] == [exact(text) for text in sent[:2]]
    assert all(letter["violations"][-1]["keyword"] == "x-etrmflow-key" for letter in letters)
