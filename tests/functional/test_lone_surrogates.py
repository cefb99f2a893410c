"""A lone UTF-16 surrogate escape in a record (``"Ac\\ud800me"``: valid JSON syntax, but no
Unicode character): that record is quarantined with the field named and kept as sent (the escape
written back byte for byte, never U+FFFD), the rest of the page and every later page load, a
second run adds no duplicate, and every reading command copes. A page that is not JSON at all
still fails as before. Real HTTP over loopback (``scripted_vendor``), the real CLI in a temp project.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from etrmflow.engine.unicode_check import UNICODE_KEYWORD, lone_surrogates
from etrmflow.testing import CliResult, EtrmflowProject, ScriptedRequest, ScriptedVendor

from . import FAST_RETRY

CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, version, price]
  properties:
    deal_id: {type: string}
    version: {type: integer, minimum: 1}
    price: {type: number, x-etrmflow-decimal: {scale: 2, precision: 18}}
    counterparty_name: {type: string}
    details: {type: object, additionalProperties: {type: integer}}
"""


def connector(paginator: str = "{type: single}") -> str:
    return ("name: vendor\nbase_url: \"{{ env_var('VENDOR_URL') }}\"\nauth: {type: none}\n" + FAST_RETRY
            + f"streams:\n  deals:\n    path: /deals\n    records: $.deals\n    paginator: {paginator}\n")


PIPELINE = ("name: deals\nsource: {connector: vendor, stream: deals}\ncontract: deal\n"
            "sinks:\n  - {type: sqlite, table: deals, mode: upsert}\n")
SQLITE_LETTERS = "dead_letter: {type: sqlite}\n"

# Exactly as the vendor writes them: a JSON escape in the bytes on the wire.
IN_A_VALUE = rb'{"deal_id": "D-1", "version": 1, "price": 1.5, "counterparty_name": "Ac\ud800me"}'
IN_A_NESTED_KEY = rb'{"deal_id": "D-2", "version": 1, "price": 2.5, "details": {"no\udc00te": "x"}}'
A_WHOLE_PAIR = rb'{"deal_id": "D-3", "version": 1, "price": 3.5, "counterparty_name": "Acme \ud83d\ude00"}'
"""Both halves of a surrogate pair: one character (U+1F600), loaded as any other."""
PAGE = b'{"deals": [' + b", ".join([IN_A_VALUE, IN_A_NESTED_KEY, A_WHOLE_PAIR]) + b"]}"

Serve = Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]


def make_project(project: EtrmflowProject, vendor: ScriptedVendor, *, dead_letter: str = "",
                 paginator: str = "{type: single}") -> EtrmflowProject:
    project.write({"contracts/deal.yml": CONTRACT, "connectors/vendor.yml": connector(paginator),
                   "pipelines/deals.yml": PIPELINE + dead_letter})
    project.env["VENDOR_URL"] = vendor.url
    return project


def printable(result: CliResult) -> CliResult:
    """A command's output as a terminal gets it: UTF-8, so no raw surrogate may be in it."""
    (result.stdout + result.stderr).encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
    return result


def run(project: EtrmflowProject) -> CliResult:
    return printable(project.run("run", "pipelines/deals.yml"))


def loaded(project: EtrmflowProject) -> list[tuple[Any, ...]]:
    if "deals" not in project.tables():
        return []
    return project.query("SELECT deal_id, counterparty_name FROM deals ORDER BY deal_id")


def stored_letters(project: EtrmflowProject, dead_letter: str) -> list[tuple[bytes, str]]:
    """(the record as the store holds it, in UTF-8 bytes; its record hash) per letter, in order."""
    if dead_letter:
        with sqlite3.connect(project.database()) as db:
            rows = db.execute("SELECT record, record_sha256 FROM dead_letters ORDER BY id").fetchall()
        return [(record.encode("utf-8"), digest) for record, digest in rows]
    lines = project.path("target/dead_letter/deals.jsonl").read_bytes().splitlines()
    letters = [json.loads(line) for line in lines if line.strip()]
    assert len(lines) == len(letters)
    return [(line, letter["record_sha256"]) for line, letter in zip(lines, letters) if "resolves" not in letter]


def unicode_violations(letter: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["pointer"], v["keyword"]) for v in letter["violations"] if v["keyword"] == UNICODE_KEYWORD]


@pytest.mark.parametrize("dead_letter", ["", SQLITE_LETTERS], ids=["jsonl", "sqlite"])
def test_records_with_a_lone_surrogate_are_quarantined_as_sent_and_the_rest_of_the_page_loads(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, dead_letter: str) -> None:
    vendor = scripted_vendor(lambda request: PAGE)
    project = make_project(etrmflow_project, vendor, dead_letter=dead_letter)

    first = run(project)

    assert first.exit_code == 0, first.output
    counts = project.pipeline_result("deals")["counts"]
    assert (counts["fetched"], counts["valid"], counts["quarantined"]) == (3, 1, 2)
    assert loaded(project) == [("D-3", "Acme \U0001F600")]
    letters = stored_letters(project, dead_letter)
    assert len(letters) == 2
    # The escape written back byte for byte, never replaced (U+FFFD) nor dropped.
    assert b'"counterparty_name":"Ac\\ud800me"' in letters[0][0]
    assert b'"details":{"no\\udc00te":"x"}' in letters[1][0]
    assert not project.files_containing("\ufffd".encode())
    # The stored text reads back as exactly the record the vendor sent.
    sent = [json.loads(IN_A_VALUE), json.loads(IN_A_NESTED_KEY)]
    assert [json.loads(record) if dead_letter else json.loads(record)["record"] for record, _ in letters] == sent

    second = run(project)

    assert second.exit_code == 0, second.output
    assert stored_letters(project, dead_letter) == letters  # nothing stored twice
    assert loaded(project) == [("D-3", "Acme \U0001F600")]
    assert printable(project.run("audit", "verify")).exit_code == 0


def test_the_violation_names_the_field_and_says_what_the_vendor_should_fix(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    vendor = scripted_vendor(lambda request: PAGE)
    project = make_project(etrmflow_project, vendor)

    assert run(project).exit_code == 0

    letters = project.dead_letters("deals")
    assert [unicode_violations(letter) for letter in letters] == [
        [("/counterparty_name", UNICODE_KEYWORD)], [("/details/no\\udc00te", UNICODE_KEYWORD)]]
    message = letters[0]["violations"][-1]["message"]
    assert message.startswith("this string holds a lone UTF-16 surrogate escape (\\ud800): ")
    assert "the vendor should send the whole character" in message
    assert letters[1]["violations"][-1]["message"].startswith("the name of this field holds a lone UTF-16 ")
    # The schema's own violation under that key names it printably too (a terminal shows it).
    assert [(v["pointer"], v["keyword"]) for v in letters[1]["violations"]] == [
        ("/details/no\\udc00te", "type"), ("/details/no\\udc00te", UNICODE_KEYWORD)]


def test_on_invalid_fail_stops_with_a_printable_reason_and_keeps_the_letters(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    vendor = scripted_vendor(lambda request: b'{"deals": [' + IN_A_NESTED_KEY + b"]}")
    project = make_project(etrmflow_project, vendor, dead_letter="on_invalid: {action: fail}\n")

    result = run(project)

    assert result.exit_code == 1, result.output
    assert ("page 0 has 1 invalid record(s) and on_invalid.action is fail; first: /details/no\\udc00te type: "
            in project.pipeline_result("deals")["error"])
    assert [letter["record"] for letter in project.dead_letters("deals")] == [json.loads(IN_A_NESTED_KEY)]
    assert loaded(project) == []


@pytest.mark.parametrize("dead_letter", ["", SQLITE_LETTERS], ids=["jsonl", "sqlite"])
def test_dlq_list_show_and_replay_read_the_letters_and_replay_keeps_them_quarantined(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, dead_letter: str) -> None:
    in_the_key = rb'{"deal_id": "D-\ud800", "version": 1, "price": 4.5}'
    vendor = scripted_vendor(lambda request: PAGE[:-2] + b", " + in_the_key + b"]}")
    project = make_project(etrmflow_project, vendor, dead_letter=dead_letter)
    assert run(project).exit_code == 0

    listed = printable(project.run("dlq", "list", "pipelines/deals.yml"))
    as_json = printable(project.run("dlq", "list", "pipelines/deals.yml", "--format", "json"))

    assert (listed.exit_code, as_json.exit_code) == (0, 0), listed.output + as_json.output
    assert "D-\\ud800" in listed.stdout  # the key as its escape: a terminal cannot print the code point
    rows = json.loads(as_json.stdout)
    assert [row["key"]["deal_id"] for row in rows] == ["D-1", "D-2", "D-\ud800"]
    assert [row["first_violation"]["keyword"] for row in rows] == [UNICODE_KEYWORD, "type", UNICODE_KEYWORD]
    assert "/details/no\\udc00te type: " in listed.stdout
    for row, sent in zip(rows, [IN_A_VALUE, IN_A_NESTED_KEY, in_the_key]):
        shown = printable(project.run("dlq", "show", "pipelines/deals.yml", row["record_sha256"][:16]))
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["record"] == json.loads(sent)

    replayed = printable(project.run("dlq", "replay", "pipelines/deals.yml"))

    assert replayed.exit_code == 0, replayed.output
    assert "still invalid 3" in replayed.stdout and "D-\\ud800" in replayed.stdout
    results = project.read_json("target/dlq_replay_results.json")
    assert results["counts"] == {"letters": 3, "replayed": 3, "valid": 0, "still_invalid": 3, "resolved": 0}
    assert loaded(project) == [("D-3", "Acme \U0001F600")]
    reopened = json.loads(printable(project.run("dlq", "list", "pipelines/deals.yml", "--format", "json")).stdout)
    assert [row["status"] for row in reopened] == ["open"] * 3


def test_the_pages_after_one_with_a_lone_surrogate_load(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    def answer(request: ScriptedRequest) -> bytes:
        if request.query.get("page", "1") == "1":
            return b'{"deals": [' + IN_A_VALUE + b", " + A_WHOLE_PAIR + b'], "more": true}'
        return b'{"deals": [{"deal_id": "D-9", "version": 1, "price": 9.5}], "more": false}'

    vendor = scripted_vendor(answer)
    project = make_project(etrmflow_project, vendor, paginator="{type: page_number, param: page, has_more: $.more}")

    result = run(project)

    assert result.exit_code == 0, result.output
    assert loaded(project) == [("D-3", "Acme \U0001F600"), ("D-9", None)]
    assert [letter["record"]["deal_id"] for letter in project.dead_letters("deals")] == ["D-1"]
    assert [r.query.get("page") for r in vendor.requests] == ["1", "2"]


def test_a_cursor_with_a_lone_surrogate_fails_the_run_with_a_clear_message_after_the_page_before(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """No URL can carry a lone surrogate: the next request is not sent (it used to be a crash)."""
    vendor = scripted_vendor(lambda request: b'{"deals": [' + A_WHOLE_PAIR + b'], "next": "c\\ud800"}')
    project = make_project(etrmflow_project, vendor, paginator="{type: cursor, cursor: $.next, param: cursor}")

    result = run(project)

    assert result.exit_code == 1, result.output
    assert project.pipeline_result("deals")["error"] == (
        f"GET {vendor.url}/deals?cursor=c%5Cud800 cannot be sent: it holds a lone UTF-16 surrogate (shown as "
        "its \\u escape), which no URL, query or header can carry; it usually comes from a cursor or next "
        "link the vendor sent: ask the vendor to send whole characters")
    assert loaded(project) == [("D-3", "Acme \U0001F600")]
    assert len(vendor.requests) == 1


NOT_JSON = {
    "cut short": b'{"deals": [' + IN_A_VALUE + b", ",
    "trailing comma": b'{"deals": [' + IN_A_VALUE + b",]}",
    "NaN": b'{"deals": [' + IN_A_VALUE[:-1] + b', "x": NaN}]}',
    "raw surrogate bytes": b'{"deals": [' + IN_A_VALUE.replace(b"\\ud800", b"\xed\xa0\x80") + b"]}",
}
"""Bodies with a lone surrogate that are not JSON for another reason (or not UTF-8): refused as
malformed, as any body that does not parse."""


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_a_page_that_is_not_json_still_fails_as_malformed(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, case: str) -> None:
    vendor = scripted_vendor(lambda request: NOT_JSON[case])
    project = make_project(etrmflow_project, vendor)

    result = run(project)

    assert result.exit_code == 1, result.output
    assert "returned malformed JSON" in project.pipeline_result("deals")["error"]
    assert len(vendor.requests) == 4  # retried as a broken transfer (max_attempts: 4), then failed
    assert loaded(project) == [] and project.dead_letters("deals") == []


@pytest.mark.parametrize("record, found", [
    ({"a": "x\ud800"}, [("/a", False)]),
    ({"a/b~": {"c\udc00": ["ok", "\udfff"]}}, [("/a~1b~0/c\\udc00", True), ("/a~1b~0/c\\udc00/1", False)]),
    (["\ud83d\ude00", "\U0001F600"], [("/0", False)]),  # two code points, not one pair: no reader gives that
    ({"fine": "\U0001F600"}, []),
])
def test_each_lone_surrogate_is_found_with_a_printable_pointer(record: Any, found: list[tuple[str, bool]]) -> None:
    assert [(pointer, is_key) for pointer, is_key, _ in lone_surrogates(record)] == found
