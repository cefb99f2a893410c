"""Adversarial cases of `etrmflow dlq`: replays interrupted or repeated, letters edited by hand,
letters that hold terminal escapes. The real CLI in a temp project, against the sandbox vendor
over loopback; real SQLite and dead-letter files."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from test_dlq import (  # the same project and helpers
    BAD_LEI,
    LETTERS,
    PIPELINE_FILE,
    first_run,
    set_contract,
)

from etrmflow.sandbox import ThreadedSandbox
from etrmflow.testing import EtrmflowProject

HEAD = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
"""
UPSERT = "sinks:\n  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}\n"
APPEND = "sinks:\n  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: append}\n"


def lines(project: EtrmflowProject, path: str = LETTERS) -> list[dict[str, Any]]:
    text = project.path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def trade_counts(project: EtrmflowProject, trade_ids: set[str]) -> Counter[str]:
    return Counter(row["trade_id"] for row in project.rows("trades") if row["trade_id"] in trade_ids)


@contextlib.contextmanager
def writer_holding(database: Path) -> Any:
    """Another process's write transaction on ``database``: every other writer waits, then fails."""
    db = sqlite3.connect(database, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


# --- a replay interrupted after its sinks committed ------------------------------------------------

def test_a_replay_that_failed_to_resolve_is_not_loaded_twice_by_the_next(
        etrmflow_project: EtrmflowProject, sandbox_vendor: ThreadedSandbox) -> None:
    # Append sinks cannot match rows by key: a replay repeated after its letters stayed open (the
    # resolution failed, or the process was killed after the sinks committed) must not add the
    # records a second time.
    letters_db = "target/letters.db"
    project = first_run(etrmflow_project, sandbox_vendor,
                        HEAD + APPEND + f"dead_letter: {{type: sqlite, path: {letters_db}}}\n")
    set_contract(project, version="1.1.0", lei_format=False)

    with writer_holding(project.path(letters_db)):
        failed = project.run("dlq", "replay", PIPELINE_FILE)

    assert failed.exit_code == 1, failed.output
    assert trade_counts(project, BAD_LEI) == {"ACME-T-0000013": 1, "ACME-T-0000153": 1}

    again = project.run("dlq", "replay", PIPELINE_FILE)

    assert again.exit_code == 0, again.output
    failed_run = project.read_json("target/dlq_replay_results.json")
    assert failed_run["continues_replay"] is True
    assert f"continues replay {failed_run['run_id']}, which wrote rows" in again.stdout
    assert trade_counts(project, BAD_LEI) == {"ACME-T-0000013": 1, "ACME-T-0000153": 1}
    assert project.count("trades") == 240
    assert {row["_etrmflow_run_id"] for row in project.rows("trades") if row["trade_id"] in BAD_LEI} == {
        failed_run["run_id"]}
    assert not project.path("target/state/trades.dlq_replay.json").exists()
    statuses = project.query("SELECT status, COUNT(*) FROM dead_letters GROUP BY status ORDER BY status",
                             database=letters_db)
    assert statuses == [("open", 10), ("resolved", 2)]


# --- letters edited after they were quarantined ---------------------------------------------------

def edit_letter(project: EtrmflowProject, trade_id: str, field: str, value: Any) -> str:
    """Change one field of a letter's record in the jsonl file by hand; its record hash stays."""
    path = project.path(LETTERS)
    out, digest = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        if data.get("record", {}).get("trade_id") == trade_id:
            data["record"][field], digest = value, data["record_sha256"]
            line = json.dumps(data, sort_keys=True, separators=(",", ":"))
        out.append(line)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    assert digest
    return digest


def test_a_letter_edited_by_hand_is_not_replayed_as_the_vendor_record(
        etrmflow_project: EtrmflowProject, sandbox_vendor: ThreadedSandbox) -> None:
    project = first_run(etrmflow_project, sandbox_vendor, HEAD + UPSERT)
    sent = next(letter["record"] for letter in lines(project) if letter["record"]["trade_id"] == "ACME-T-0000013")
    flipped = {"B": "S", "S": "B"}[sent["buy_sell"]]  # still valid: the buyer became the seller
    digest = edit_letter(project, "ACME-T-0000013", "buy_sell", flipped)
    set_contract(project, version="1.1.0", lei_format=False)

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 0, result.output
    # Only the untouched letter is loaded; the edited one stays open and says why.
    assert trade_counts(project, BAD_LEI) == {"ACME-T-0000153": 1}
    report = project.read_json("target/dlq_replay_results.json")
    assert report["counts"]["resolved"] == 1
    edited = next(o for o in report["still_invalid"] if o["record_sha256"] == digest)
    assert [v["keyword"] for v in edited["violations"]] == ["x-etrmflow-record-sha256"]
    assert "changed after it was quarantined" in edited["violations"][0]["message"]
    assert f"still invalid {digest[:12]}  ACME-T-0000013, 1: / x-etrmflow-record-sha256" in result.stdout
    # Put back as the vendor sent it, the letter replays.
    edit_letter(project, "ACME-T-0000013", "buy_sell", sent["buy_sell"])
    assert project.run("dlq", "replay", PIPELINE_FILE).exit_code == 0
    assert trade_counts(project, BAD_LEI) == {"ACME-T-0000013": 1, "ACME-T-0000153": 1}


def test_an_edited_sqlite_letter_is_not_replayed_either(
        etrmflow_project: EtrmflowProject, sandbox_vendor: ThreadedSandbox) -> None:
    project = first_run(etrmflow_project, sandbox_vendor, HEAD + UPSERT + "dead_letter: {type: sqlite}\n")
    with contextlib.closing(sqlite3.connect(project.database())) as db, db:
        db.execute("UPDATE dead_letters SET record = json_set(record, '$.buy_sell', "
                   "CASE json_extract(record, '$.buy_sell') WHEN 'B' THEN 'S' ELSE 'B' END) "
                   "WHERE json_extract(record, '$.trade_id') = 'ACME-T-0000153'")
    set_contract(project, version="1.1.0", lei_format=False)

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 0, result.output
    assert trade_counts(project, BAD_LEI) == {"ACME-T-0000013": 1}
    assert project.query("SELECT status FROM dead_letters WHERE json_extract(record, '$.trade_id') = "
                         "'ACME-T-0000153'") == [("open",)]


# --- what a vendor sends never drives the terminal --------------------------------------------------

DEAL_CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id, day]
  properties:
    deal_id: {type: string}
    day: {type: string, format: date}
"""
DEAL_CONNECTOR = """\
name: vendor
base_url: "{{ env_var('VENDOR_URL') }}"
streams:
  deals:
    path: /deals
    records: $.deals
    paginator: {type: single}
"""
HOSTILE = "D-1\x1b]0;owned\x07\x1b[2J\u009b31m\u202e"
"""A key that sets the window title, clears the screen, colours (8-bit CSI) and reverses text."""


def test_control_characters_from_the_vendor_are_escaped_in_every_table(
        etrmflow_project: EtrmflowProject, scripted_vendor: Any) -> None:
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": HOSTILE, "day": "not a day"}]})
    project = etrmflow_project
    project.write({"contracts/deal.yml": DEAL_CONTRACT, "connectors/vendor.yml": DEAL_CONNECTOR,
                   "pipelines/deals.yml": "name: deals\nsource: {connector: vendor, stream: deals}\n"
                                          "contract: deal\nsinks:\n  - {type: sqlite, table: deals}\n"})
    project.env["VENDOR_URL"] = vendor.url
    assert project.run("run", "pipelines/deals.yml").exit_code == 0

    listed = project.run("dlq", "list", "pipelines/deals.yml")
    replayed = project.run("dlq", "replay", "pipelines/deals.yml")
    traced = project.run("lineage", "pipelines/deals.yml", HOSTILE)

    for result in (listed, replayed, traced):
        assert result.exit_code == 0, result.output
        shown = result.stdout + result.stderr
        assert not set(shown) & {"\x1b", "\x07", "\u009b", "\u202e"}, repr(shown)
    escaped = r"D-1\x1b]0;owned\x07\x1b[2J\x9b31m\u202e"
    assert escaped in listed.stdout and escaped in replayed.stdout and escaped in traced.stdout
    # The JSON forms keep the value itself, escaped as JSON does.
    rows = json.loads(project.run("dlq", "list", "pipelines/deals.yml", "--format", "json").stdout)
    assert rows[0]["key"] == {"deal_id": HOSTILE}


# --- one dead-letter file shared by two pipelines ---------------------------------------------------

def test_a_replay_loads_only_its_own_pipelines_letters_from_a_shared_file(
        etrmflow_project: EtrmflowProject, scripted_vendor: Any) -> None:
    # Each pipeline quarantines a deal of its own and the same deal S-1.
    vendor = scripted_vendor(lambda request: {"deals": [
        {"deal_id": "A-1" if request.path == "/a" else "B-1", "day": "2024-05-32"},
        {"deal_id": "S-1", "day": "2024-05-32"}]})
    connector = DEAL_CONNECTOR.replace("  deals:\n    path: /deals", "  a:\n    path: /a") + \
        "  b:\n    path: /b\n    records: $.deals\n    paginator: {type: single}\n"
    project = etrmflow_project
    shared = "dead_letter: {type: jsonl, path: target/dead_letter/shared.jsonl}\n"
    project.write({"contracts/deal.yml": DEAL_CONTRACT, "connectors/vendor.yml": connector,
                   "pipelines/a.yml": f"name: a\nsource: {{connector: vendor, stream: a}}\ncontract: deal\n"
                                      f"sinks:\n  - {{type: sqlite, table: deals_a}}\n{shared}",
                   "pipelines/b.yml": f"name: b\nsource: {{connector: vendor, stream: b}}\ncontract: deal\n"
                                      f"sinks:\n  - {{type: sqlite, table: deals_b}}\n{shared}"})
    project.env["VENDOR_URL"] = vendor.url
    assert project.run("run", "pipelines").exit_code == 0
    assert Counter(line["pipeline"] for line in lines(project, "target/dead_letter/shared.jsonl")) == {
        "a": 2, "b": 2}
    project.write({"contracts/deal.yml": DEAL_CONTRACT.replace(", format: date", "")})

    listed = json.loads(project.run("dlq", "list", "pipelines/a.yml", "--format", "json").stdout)
    result = project.run("dlq", "replay", "pipelines/a.yml")

    assert [row["key"] for row in listed] == [{"deal_id": "A-1"}, {"deal_id": "S-1"}]
    assert result.exit_code == 0, result.output
    assert sorted(row["deal_id"] for row in project.rows("deals_a")) == ["A-1", "S-1"]
    assert "(2 resolved)" in result.stdout
    assert project.run("dlq", "replay", "pipelines/b.yml").exit_code == 0
    assert sorted(row["deal_id"] for row in project.rows("deals_b")) == ["B-1", "S-1"]
    assert project.run("dlq", "replay", "pipelines/a.yml").stdout.startswith("OK   a: replayed 0,")
