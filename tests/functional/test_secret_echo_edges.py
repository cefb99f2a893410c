"""A vendor echoing a credential, from an adversarial pass: whatever the spelling (JSON escapes,
``\\u`` escapes, escaped slashes, a number, a key, a nested list), the value reaches no table,
no dead letter, no kept body, no log line and no command's output; a page without it loads as
it always did. Real HTTP over loopback (``scripted_vendor``), the real CLI in a temp project.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from etrmflow import jsontext
from etrmflow.secrets import Redactor
from etrmflow.testing import (
    Answer,
    CliResult,
    EtrmflowProject,
    ScriptedRequest,
    ScriptedVendor,
)

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

SINKS = """\
sinks:
  - {type: sqlite, table: deals, mode: upsert}
  - {type: csv, path: target/csv/deals.csv}
"""

Serve = Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]


def spellings(secret: str) -> list[bytes]:
    """Every way a file or an output could spell ``secret``: as is, JSON-escaped (ASCII or
    not, slashes escaped or not) and as Python's repr writes it inside a message."""
    texts = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1]}
    texts |= {text.replace("/", "\\/") for text in texts}
    return sorted({text.encode() for text in texts if text})


def assert_nowhere(project: EtrmflowProject, secret: str, results: list[CliResult]) -> None:
    for needle in spellings(secret):
        assert project.files_containing(needle) == [], needle
        for result in results:
            assert needle.decode() not in result.stdout + result.stderr, (needle, result.output)


def make_project(project: EtrmflowProject, vendor: ScriptedVendor, secret: str, *, dead_letter: str = "",
                 connector: str = CONNECTOR) -> EtrmflowProject:
    project.write({"contracts/deal.yml": CONTRACT, "connectors/vendor.yml": connector,
                   "pipelines/deals.yml": "name: deals\nsource: {connector: vendor, stream: deals}\n"
                                          "contract: deal\n" + SINKS + dead_letter})
    project.env.update(VENDOR_URL=vendor.url, VENDOR_KEY=secret)
    return project


def body(*records: str) -> bytes:
    return ('{"deals": [' + ", ".join(records) + "]}").encode()


def every_output(project: EtrmflowProject, keys: list[str]) -> list[CliResult]:
    """The runs' and every reading command's output: dlq list/show, lineage, audit show."""
    results = [project.run("--log-level", "debug", "--log-format", "json", "run", "--keep-bodies",
                           "pipelines/deals.yml")]
    assert results[0].exit_code == 0, results[0].output
    results.append(project.run("--log-level", "debug", "run", "--keep-bodies", "pipelines/deals.yml"))
    results.append(project.run("dlq", "list", "pipelines/deals.yml"))
    for letter in letter_records(project):
        results.append(project.run("dlq", "show", "pipelines/deals.yml", letter["record_sha256"][:12]))
        assert results[-1].exit_code == 0, results[-1].output
    results += [project.run("lineage", "pipelines/deals.yml", key) for key in keys]
    results += [project.run("audit", "show"), project.run("audit", "verify")]
    assert [r.exit_code for r in results[2:]] == [0] * len(results[2:]), [r.output for r in results]
    return results


def letter_records(project: EtrmflowProject) -> list[dict[str, Any]]:
    return [letter for letter in project.dead_letters("deals") if "record" in letter]


def loaded_ids(project: EtrmflowProject) -> list[str]:
    if "deals" not in project.tables():
        return []
    return [row[0] for row in project.query("SELECT deal_id FROM deals ORDER BY deal_id")]


ESCAPED = {
    "quote-backslash-slash": 'q"uo\\te/sl-7f1e',
    "non-ascii": "sécret-ключ-✓-7f1e",
    "control-character": "tab\there-7f1e",
    "astral": "\U0001F600-key-7f1e",
}


@pytest.mark.parametrize("dead_letter", ["", "dead_letter: {type: sqlite}\n"], ids=["jsonl", "sqlite"])
@pytest.mark.parametrize("case", sorted(ESCAPED))
@pytest.mark.parametrize("escape", ["json", "ascii-json"])
def test_a_secret_with_characters_json_escapes_is_quarantined_and_in_no_file_or_output(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, case: str, escape: str, dead_letter: str) -> None:
    secret = ESCAPED[case]
    note = json.dumps("see " + secret, ensure_ascii=escape == "ascii-json")
    vendor = scripted_vendor(lambda request: body('{"deal_id": "D-1", "version": 1, "price": 1.5, "note": ' + note + "}",
                                                  '{"deal_id": "D-2", "version": 1, "price": 2.5}'))
    project = make_project(etrmflow_project, vendor, secret, dead_letter=dead_letter)

    results = every_output(project, ["D-1", "D-2"])

    assert loaded_ids(project) == ["D-2"]
    assert project.pipeline_result("deals")["counts"]["quarantined"] == 1
    assert_nowhere(project, secret, results)


def test_a_secret_with_a_slash_escaped_in_one_place_only_is_still_found(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """JSON lets a writer escape any ``/`` or none: a vendor mixing both (a pre-escaped link
    pasted into its answer) spells the secret in neither of the forms searched for."""
    secret = "key/with/slashes-7f1e"
    vendor = scripted_vendor(lambda request: body(
        '{"deal_id": "D-1", "version": 1, "price": 1.5, "note": "key\\/with/slashes-7f1e"}',
        '{"deal_id": "D-2", "version": 1, "price": 2.5}'))
    project = make_project(etrmflow_project, vendor, secret)

    results = every_output(project, ["D-1", "D-2"])

    assert loaded_ids(project) == ["D-2"]
    assert_nowhere(project, secret, results)


SHAPES = {
    "dict-key": '{"deal_id": "D-1", "version": 1, "price": 1.5, "extra": {"SECRET": 1}}',
    "nested-list": '{"deal_id": "D-1", "version": 1, "price": 1.5, "extra": [[1, ["x SECRET y"]]]}',
    "number": '{"deal_id": "D-1", "version": 1, "price": 1.5, "extra": SECRET}',
    "number-in-a-longer-number": '{"deal_id": "D-1", "version": 1, "price": 1.5, "extra": 9SECRET0}',
    "long-decimal-number": '{"deal_id": "D-1", "version": 1, "price": 1.5, "extra": 0.SECRET1234567890123}',
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_secret_as_a_key_a_number_or_deep_in_lists_is_quarantined_and_masked(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, shape: str) -> None:
    secret = "48151623"
    record = SHAPES[shape].replace("SECRET", secret)
    vendor = scripted_vendor(lambda request: body(record, '{"deal_id": "D-2", "version": 1, "price": 2.5}'))
    project = make_project(etrmflow_project, vendor, secret)

    results = every_output(project, ["D-1", "D-2"])

    assert loaded_ids(project) == ["D-2"]
    [letter] = letter_records(project)
    assert "x-etrmflow-secret" in [v["keyword"] for v in letter["violations"]]
    assert_nowhere(project, secret, results)


def test_a_secret_split_across_two_fields_is_not_one_and_loads(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """Halves are not the secret (each alone is no credential): nothing to quarantine. (SQLite
    stores a row's texts back to back, so its file does spell the whole value: the vendor's
    bytes, loaded as sent.)"""
    secret = "split-secret-7f1e"
    vendor = scripted_vendor(lambda request: body(
        '{"deal_id": "D-1", "version": 1, "price": 1.5, "a": "split-se", "b": "cret-7f1e"}'))
    project = make_project(etrmflow_project, vendor, secret)

    results = every_output(project, ["D-1"])

    assert loaded_ids(project) == ["D-1"]
    assert project.query("SELECT a, b FROM deals") == [("split-se", "cret-7f1e")]
    assert not any(secret in result.output for result in results)


@pytest.mark.parametrize("link_in", ["body", "header"])
def test_a_secret_in_a_next_link_and_a_response_header_is_in_no_file_or_output(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, link_in: str) -> None:
    secret = "linked-key-7f1e"

    def answer(request: ScriptedRequest) -> Answer:
        headers = {"X-Echo-Key": secret}
        if request.query.get("page") == "2":
            return Answer(body=body('{"deal_id": "D-2", "version": 1, "price": 2.5}'), headers=headers)
        link = f"{vendor.url}/deals?page=2&k={secret}"
        return Answer(body=('{"deals": [{"deal_id": "D-1", "version": 1, "price": 1.5}], '
                            f'"next": "{link}"}}').encode(), headers={**headers, "Link": f'<{link}>; rel="next"'})

    vendor = scripted_vendor(answer)
    connector = CONNECTOR.replace("paginator: {type: single}", "paginator: {type: next_link, in: " + link_in + "}")
    project = make_project(etrmflow_project, vendor, secret, connector=connector)

    results = every_output(project, ["D-1", "D-2"])

    assert loaded_ids(project) == ["D-1", "D-2"]
    assert_nowhere(project, secret, results)


def test_an_oauth_access_token_echoed_in_a_record_is_not_loaded(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    token = "access-token-9d2c4e7a1b"

    def answer(request: ScriptedRequest) -> Any:
        if request.path == "/oauth2/token":
            return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        return body('{"deal_id": "D-1", "version": 1, "price": 1.5, "note": "Bearer ' + token + '"}',
                    '{"deal_id": "D-2", "version": 1, "price": 2.5}')

    vendor = scripted_vendor(answer)
    connector = CONNECTOR.replace(
        """auth: {type: api_key, in: query, name: k, value: "{{ secret('VENDOR_KEY') }}"}""",
        """auth: {type: oauth2_client_credentials, token_url: /oauth2/token, client_id: demo,
       client_secret: "{{ secret('VENDOR_KEY') }}"}""")
    project = make_project(etrmflow_project, vendor, "client-secret-7f1e", connector=connector)

    results = every_output(project, ["D-1", "D-2"])

    assert_nowhere(project, "client-secret-7f1e", results)
    assert loaded_ids(project) == ["D-2"]
    assert_nowhere(project, token, results)


def test_a_masked_letter_is_not_replayed_into_the_table_with_the_mask(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """The mask is the one change made to a quarantined record: replaying it would load a value
    the vendor never sent (``k=***``) as if it had."""
    secret = "replay-key-7f1e"
    vendor = scripted_vendor(lambda request: body(
        '{"deal_id": "D-1", "version": 1, "price": 1.5, "note": "https://v.example/d?k=' + secret + '"}'))
    project = make_project(etrmflow_project, vendor, secret)
    assert project.run("run", "pipelines/deals.yml").exit_code == 0

    replay = project.run("dlq", "replay", "pipelines/deals.yml")

    assert loaded_ids(project) == []
    assert replay.exit_code == 0, replay.output
    assert_nowhere(project, secret, [replay])


def test_a_page_with_unicode_escapes_and_no_secret_loads_everything_fast(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    records = [f'{{"deal_id": "D-{i}", "version": 1, "price": 1.5, "note": "caf\\u00e9 \\u00fcber {i:05d}"}}'
               for i in range(1, 2001)]
    page = body(*records)
    vendor = scripted_vendor(lambda request: page)
    project = make_project(etrmflow_project, vendor, "unused-key-7f1e")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    counts = project.pipeline_result("deals")["counts"]
    assert (counts["valid"], counts["quarantined"]) == (2000, 0)
    assert project.query("SELECT note FROM deals WHERE deal_id = 'D-7'") == [("café über 00007",)]
    redactor = Redactor()
    redactor.add("unused-key-7f1e")
    decoded = json.loads(page)["deals"]
    began = time.perf_counter()
    for _ in range(20):
        assert redactor.in_body(page) is None
        assert not redactor.found_in(jsontext.dumps(decoded))
    assert (time.perf_counter() - began) / 20 < 0.02  # a page of 2,000 records: well under 20 ms


def test_a_four_character_secret_also_in_ordinary_data_quarantines_the_records_holding_it(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """A short secret that is also ordinary text (here a year) is found in every record that holds
    the text: those are quarantined, masked, never loaded; the rest load."""
    secret = "2024"
    vendor = scripted_vendor(lambda request: body(
        '{"deal_id": "D-1", "version": 1, "price": 1.5, "trade_date": "2024-05-01"}',
        '{"deal_id": "D-2", "version": 1, "price": 2.5, "trade_date": "2025-05-01"}'))
    project = make_project(etrmflow_project, vendor, secret)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert loaded_ids(project) == ["D-2"]
    [letter] = letter_records(project)
    assert letter["record"]["trade_date"] == "***-05-01"
    assert "x-etrmflow-secret" in [v["keyword"] for v in letter["violations"]]
