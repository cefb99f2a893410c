"""The audit trail: a real run writes a hash chain that ties every page to its lineage, and
`etrmflow audit verify` finds every kind of tampering, at the right line."""

from __future__ import annotations

import hashlib
import itertools
import re
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import pytest
from jsonschema import Draft202012Validator

import etrmflow
from etrmflow.audit import GENESIS, AuditLog, canonical, entry_hash, events, verify
from etrmflow.cli.schema_command import packaged_schema
from etrmflow.components import BatchInfo, Sink
from etrmflow.plugins import Registry
from etrmflow.testing import EtrmflowProject, SandboxFactory, sandbox_connector

if TYPE_CHECKING:
    import pandas as pd

REPO = Path(__file__).resolve().parents[1]
LOG = "target/audit/audit.jsonl"
CANARY = "canary-audit-5e0b7d1c9a"
QUERY_KEY = "{type: api_key, in: query, name: api_key, value: \"{{ secret('SANDBOX_KEY') }}\"}"


def read_log(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def run_project(project: EtrmflowProject, vendor: Any) -> EtrmflowProject:
    project.write({"connectors/vendor.yml": sandbox_connector(page_size=10, auth=QUERY_KEY),
                   "pipelines/trades.yml": "name: trades\nsource: {connector: vendor, stream: trades}\n"
                                           "contract: trade\n"})
    project.copy_from(REPO, "contracts")
    project.env.update(SANDBOX_URL=vendor.base_url, SANDBOX_KEY=CANARY)
    return project


def test_a_run_chains_every_page_to_its_dead_letters_and_rows(etrmflow_project: EtrmflowProject,
                                                              sandbox_vendor_factory: SandboxFactory) -> None:
    project = run_project(etrmflow_project, sandbox_vendor_factory(trades=25, api_key=CANARY))

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    entries = read_log(project.path(LOG))
    run_id = project.run_results()["run_id"]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["prev"] == GENESIS
    assert all(e["prev"] == before["hash"] for before, e in itertools.pairwise(entries))
    assert all(e["hash"] == entry_hash(e) for e in entries)
    assert {(e["run_id"], e["pipeline"]) for e in entries} == {(run_id, "trades")}
    pages = [e for e in entries if e["event"] == "page_fetched"]
    assert [e["event"] for e in entries] == [
        "run_started",
        "page_fetched", "batch_validated", "batch_written",
        "page_fetched", "batch_validated", "batch_quarantined", "batch_written",
        "page_fetched", "batch_validated", "batch_written",
        "run_finished"]
    assert [(p["page"], p["records"], p["status"], p["method"]) for p in pages] == [
        (0, 10, 200, "GET"), (1, 10, 200, "GET"), (2, 5, 200, "GET")]
    assert [(p["attempts"], p["body_kept"], p["kept_sha256"]) for p in pages] == 3 * [(1, None, None)]
    assert all(re.fullmatch("[0-9a-f]{12}", p["correlation_id"]) and p["elapsed_ms"] >= 0 for p in pages)
    assert len({p["correlation_id"] for p in pages}) == 3
    assert all(p["url"].startswith(f"{project.env['SANDBOX_URL']}/api/v2/trades?") and "api_key=***" in p["url"]
               for p in pages)
    assert CANARY.encode() not in project.path(LOG).read_bytes()
    # The lineage: the same page hashes are in the dead letters and in the SQLite rows.
    body = [p["body_sha256"] for p in pages]
    letters = project.dead_letters("trades")
    assert {letter["page_sha256"] for letter in letters} == {body[1]}
    assert {row[0] for row in project.query("SELECT DISTINCT _etrmflow_page_sha256 FROM trades")} == set(body)
    validated = [e for e in entries if e["event"] == "batch_validated"]
    assert {row[0] for row in project.query("SELECT DISTINCT _etrmflow_batch_id FROM trades")} == {
        e["batch_id"] for e in validated}
    assert [(e["valid"], e["quarantined"]) for e in validated] == [(10, 0), (9, 1), (5, 0)]
    quarantined = next(e for e in entries if e["event"] == "batch_quarantined")
    assert (quarantined["batch_id"], quarantined["quarantined"], quarantined["new"]) == (
        validated[1]["batch_id"], 1, 1)
    assert quarantined["dead_letter"] == project.pipeline_result()["dead_letter"]
    assert [e["rows"] for e in entries if e["event"] == "batch_written"] == [10, 9, 5]
    finished = entries[-1]
    assert (finished["status"], finished["counts"]["fetched"], finished["counts"]["quarantined"],
            finished["counts"]["written"]) == ("success", 25, 1, 24)
    assert project.run_results()["audit"] == {"path": "audit/audit.jsonl", "entries": 12,
                                              "last_hash": finished["hash"]}
    verified = project.run("audit", "verify")
    assert (verified.exit_code, verified.stdout) == (
        0, (f"target/audit/audit.jsonl: intact: 12 entries, last seq 12, last hash {finished['hash']}\n"
           f"  not cut short: seq 12, the last entry recorded by target/run_results.json (run {run_id}), is there\n"))


def test_letters_stored_before_a_page_fails_are_in_the_audit(etrmflow_project: EtrmflowProject,
                                                              sandbox_vendor_factory: SandboxFactory) -> None:
    project = run_project(etrmflow_project, sandbox_vendor_factory(trades=25, api_key=CANARY))
    project.write({"pipelines/trades.yml": "name: trades\nsource: {connector: vendor, stream: trades}\n"
                                           "contract: trade\non_invalid: {action: fail}\n"})

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    entries = read_log(project.path(LOG))
    assert [e["event"] for e in entries] == [
        "run_started",
        "page_fetched", "batch_validated", "batch_written",
        "page_fetched", "batch_quarantined",  # stored in the dead letters, then the policy failed the run
        "run_finished"]
    letters = project.dead_letters("trades")
    assert (entries[5]["quarantined"], entries[5]["new"], len(letters)) == (1, 1, 1)
    assert {letter["batch_id"] for letter in letters} == {entries[5]["batch_id"]}


def test_page_hashes_are_those_of_the_body_and_the_canonical_records(etrmflow_project: EtrmflowProject,
                                                                     sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=8, api_key=CANARY)
    project = run_project(etrmflow_project, vendor)
    with urllib.request.urlopen(f"{vendor.base_url}/api/v2/trades?limit=10&api_key={CANARY}") as response:
        body = response.read()

    first, second = project.run("run", "pipelines/trades.yml"), project.run("run", "pipelines/trades.yml")

    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    entries = read_log(project.path(LOG))
    pages = [e for e in entries if e["event"] == "page_fetched"]
    records = orjson.loads(body)["trades"]
    assert [(p["body_sha256"], p["records_sha256"], p["byte_count"], p["records"]) for p in pages] == 2 * [
        (hashlib.sha256(body).hexdigest(), hashlib.sha256(orjson.dumps(records, option=orjson.OPT_SORT_KEYS))
         .hexdigest(), len(body), 8)]
    # The second run continues the chain of the first.
    starts = [index for index, e in enumerate(entries) if e["event"] == "run_started"]
    assert len(starts) == 2 and entries[starts[1]]["prev"] == entries[starts[1] - 1]["hash"]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    shown = project.run("audit", "show", "--run", project.run_results()["run_id"], "--format", "json")
    assert [orjson.loads(line) for line in shown.stdout.splitlines()] == entries[starts[1]:]
    assert project.run("audit", "verify").exit_code == 0


# --- tampering ------------------------------------------------------------------------------

def write_log(path: Path) -> list[bytes]:
    """Six genuine entries, as the engine writes them; returns their lines."""
    log = AuditLog(path)
    log.append(run_id="r1", pipeline="trades", events=[("run_started", {"resumed_from_page": None})])
    log.append(run_id="r1", pipeline="trades", events=[
        ("page_fetched", {"page": 0, "body_sha256": "a" * 64}),
        ("batch_validated", {"batch_id": "b0", "valid": 10, "quarantined": 0}),
        ("batch_written", {"batch_id": "b0", "sink": "sqlite", "rows": 10})])
    log.append(run_id="r1", pipeline="trades", events=[("page_fetched", {"page": 1, "body_sha256": "b" * 64})])
    log.append(run_id="r1", pipeline="trades", events=[("run_finished", {"status": "success"})])
    return path.read_bytes().splitlines(keepends=True)


def forged(after: bytes, **fields: Any) -> bytes:
    before = orjson.loads(after)
    entry = {"seq": before["seq"] + 1, "ts": before["ts"], "run_id": "r1", "pipeline": "trades",
             "event": "batch_written", **fields, "prev": before["hash"]}
    entry["hash"] = hashlib.sha256(canonical(entry)).hexdigest()
    return orjson.dumps(entry) + b"\n"


def tamper(lines: list[bytes], how: str) -> list[bytes]:
    changed = list(lines)
    if how == "edit":
        changed[3] = changed[3].replace(b'"rows":10', b'"rows":11')
    elif how == "delete":
        del changed[2]
    elif how == "insert":
        changed.insert(3, forged(lines[2], batch_id="b0", sink="sqlite", rows=99))
    elif how == "swap":
        changed[1], changed[2] = changed[2], changed[1]
    return changed


TAMPERING = {
    "edit": "  line 4 (seq 4): edited: the entry does not match its hash: it was changed after it was written\n",
    "delete": "  line 3 (seq 4): deleted: seq 3 missing after line 2 (seq 2)\n",
    "insert": "  line 4 (seq 4): inserted: not part of the chain: line 5 (seq 4) chains to line 3 (seq 3), "
              "skipping 1 entry from here on\n",
    "swap": "  line 2 (seq 3): reordered: belongs at line 3: entries were moved (each is intact)\n"
            "  line 3 (seq 2): reordered: belongs at line 2: entries were moved (each is intact)\n",
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_verify_names_the_line_that_was_tampered_with(how: str, etrmflow_project: EtrmflowProject) -> None:
    path = etrmflow_project.path(LOG)
    lines = tamper(write_log(path), how)
    path.write_bytes(b"".join(lines))

    result = etrmflow_project.run("audit", "verify", "--log", str(path))

    problems = TAMPERING[how].count("\n")
    entries = len(lines)
    assert (result.exit_code, result.stdout) == (
        1, f"{path}: NOT intact: {problems} problem(s) in {entries} readable entries\n{TAMPERING[how]}")


def test_the_untouched_log_verifies(etrmflow_project: EtrmflowProject) -> None:
    path = etrmflow_project.path(LOG)
    write_log(path)

    result = etrmflow_project.run("audit", "verify", "--log", str(path))

    last = read_log(path)[-1]
    assert (result.exit_code, result.stdout) == (
        0, f"{path}: intact: 6 entries, last seq 6, last hash {last['hash']}\n")


def test_a_torn_last_line_is_reported_as_a_crash_and_recovered_by_the_next_append(
        etrmflow_project: EtrmflowProject) -> None:
    path = etrmflow_project.path(LOG)
    lines = write_log(path)
    torn = lines[5][:40]
    path.write_bytes(b"".join(lines[:5]) + torn)

    result = etrmflow_project.run("audit", "verify", "--log", str(path))
    AuditLog(path).append(run_id="r2", pipeline="trades", events=[("run_started", {"resumed_from_page": None})])

    assert (result.exit_code, result.stdout) == (
        1, (f"{path}: NOT intact: 1 problem(s) in 5 readable entries\n"
           f"  line 6: truncated: the last line is incomplete (40 bytes, no line end): an append was cut short, "
           f"e.g. by a crash; the next run drops it and records a log_recovered entry\n"))
    recovered = read_log(path)
    assert [(e["seq"], e["event"]) for e in recovered[4:]] == [(5, "page_fetched"), (6, "log_recovered"),
                                                              (7, "run_started")]
    assert (recovered[5]["dropped_bytes"], recovered[5]["dropped_sha256"]) == (
        40, hashlib.sha256(torn).hexdigest())
    assert verify(path).intact


def test_a_missing_log_exits_2(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("audit", "verify")

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == ("Error: cannot read the audit log target/audit/audit.jsonl: "
                             "No such file or directory\n")


def test_a_garbled_middle_line_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    path.write_bytes(b"".join(lines[:2]) + b"{not json\n" + b"".join(lines[3:]))

    problems = [str(p) for p in verify(path).problems]

    assert problems == ["line 3: malformed: not an audit entry (not JSON, or envelope keys missing)",
                        "line 4 (seq 4): deleted: seq 3 missing after line 2 (seq 2)"]


# --- entries cut from the end ------------------------------------------------------------------

@pytest.mark.parametrize("cut", [1, 3])
def test_entries_cut_from_the_end_are_found_through_run_results(
        cut: int, etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    project = run_project(etrmflow_project, sandbox_vendor_factory(trades=25, api_key=CANARY))
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    results = project.run_results()
    schema = Draft202012Validator(packaged_schema("run_results"))
    assert list(schema.iter_errors(results)) == []
    broken = {**results, "audit": {**results["audit"], "last_hash": "xyz"}}
    assert [error.message for error in schema.iter_errors(broken)] == ["'xyz' does not match '^[0-9a-f]{64}$'"]
    path = project.path(LOG)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-cut]))  # a clean cut: every remaining entry chains perfectly

    result = project.run("audit", "verify")

    last = 12 - cut
    gap = "seq 12" if cut == 1 else f"seq {last + 1} to 12"
    assert (result.exit_code, result.stdout) == (
        1, (f"target/audit/audit.jsonl: NOT intact: 1 problem(s) in {last} readable entries\n"
           f"  line {last + 1} (seq {last + 1}): deleted: {gap} missing at the end of the log: "
           f"target/run_results.json (run {results['run_id']}) names the entry with hash "
           f"{results['audit']['last_hash']} (seq 12), but the log ends at seq {last}; entries were cut from its end\n"))
    assert verify(path).intact  # the chain alone cannot see it


def test_expect_last_finds_a_cut_end_without_run_results(etrmflow_project: EtrmflowProject) -> None:
    path = etrmflow_project.path(LOG)
    lines = write_log(path)
    last = orjson.loads(lines[-1])["hash"]
    path.write_bytes(b"".join(lines[:-1]))

    cut = etrmflow_project.run("audit", "verify", "--log", str(path), "--expect-last", last)
    path.write_bytes(b"".join(lines))
    whole = etrmflow_project.run("audit", "verify", "--log", str(path), "--expect-last", last)
    bad = etrmflow_project.run("audit", "verify", "--log", str(path), "--expect-last", "abc")

    assert (cut.exit_code, cut.stdout) == (
        1, (f"{path}: NOT intact: 1 problem(s) in 5 readable entries\n"
           f"  line 6: deleted: --expect-last names the entry with hash {last}, which the log does not hold: "
           f"entries were cut from its end, or it was rewritten after that\n"))
    assert (whole.exit_code, whole.stdout.splitlines()[1]) == (
        0, "  not cut short: seq 6, the last entry recorded by --expect-last, is there")
    assert bad.exit_code == 2 and "--expect-last" in bad.stderr and "64 hex digits" in bad.stderr


def test_a_cut_end_followed_by_new_entries_is_found_too(etrmflow_project: EtrmflowProject) -> None:
    """Cut back, then appended to by a later writer: the chain is whole, the recorded end is gone."""
    path = etrmflow_project.path(LOG)
    lines = write_log(path)
    recorded = orjson.loads(lines[-1])
    path.write_bytes(b"".join(lines[:-2]))
    for _ in range(2):
        AuditLog(path).append(run_id="r2", pipeline="trades", events=[("run_started", {"resumed_from_page": None})])
    etrmflow_project.write({"target/run_results.json": orjson.dumps({"run_id": "r1", "audit": {
        "path": "audit/audit.jsonl", "entries": recorded["seq"], "last_hash": recorded["hash"]}}).decode()})

    result = etrmflow_project.run("audit", "verify")

    assert verify(path).intact
    assert (result.exit_code, result.stdout.splitlines()[1:]) == (1, [
        (f"  line 7: deleted: target/run_results.json (run r1) names the entry with hash {recorded['hash']} "
        f"(seq 6), which the log does not hold: entries were cut from its end, or it was rewritten after that")])


# --- dlq replay --------------------------------------------------------------------------------

REPLAY_PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}
"""
LEI_CHECK = "counterparty_lei: {type: string, format: lei}"


def test_a_replay_continues_the_chain_with_what_it_wrote_and_resolved(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    project = run_project(etrmflow_project, sandbox_vendor_factory(trades=250, api_key=CANARY))
    project.write({"connectors/vendor.yml": sandbox_connector(page_size=100, auth=QUERY_KEY),
                   "pipelines/trades.yml": REPLAY_PIPELINE})
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    ran = len(read_log(project.path(LOG)))
    contract = project.path("contracts/trade.yml")
    contract.write_text(contract.read_text().replace(LEI_CHECK, "counterparty_lei: {type: string}"))

    dry = project.run("dlq", "replay", "--dry-run", "pipelines/trades.yml")
    assert dry.exit_code == 0 and len(read_log(project.path(LOG))) == ran  # a dry run records nothing
    replayed = project.run("dlq", "replay", "pipelines/trades.yml")

    assert replayed.exit_code == 0, replayed.output
    report = project.read_json("target/dlq_replay_results.json")
    entries = read_log(project.path(LOG))[ran:]
    assert {e["run_id"] for e in entries} == {report["run_id"]}
    assert [e["event"] for e in entries] == ["replay_started", "batch_written", "batch_written",
                                             "letters_resolved", "replay_finished"]
    started, *written, resolved, finished = entries
    assert (started["letters"], started["records"], started["dead_letter"]) == (
        12, 12, "jsonl target/dead_letter/trades.jsonl")
    assert [(e["batch_id"], e["rows"], e["records"], e["page_sha256"]) for e in written] == [
        (b["batch_id"], 1, 1, b["page_sha256"]) for b in report["batches"]]
    assert {row[0] for row in project.query(
        "SELECT _etrmflow_batch_id FROM trades WHERE _etrmflow_run_id = ?", (report["run_id"],))} == {
        e["batch_id"] for e in written}
    assert (resolved["resolved"], resolved["batch_ids"]) == (2, [b["batch_id"] for b in report["batches"]])
    assert (finished["status"], finished["valid"], finished["invalid"], finished["resolved"], finished["error"]) == (
        "success", 2, 10, 2, None)
    verified = project.run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert CANARY.encode() not in project.path(LOG).read_bytes()


# --- sinks that post -----------------------------------------------------------------------------

class _PostingSink(Sink):
    """Sends each batch to a vendor (in this test: to a list, the vendor being beside the point).

    Example::

        sinks: [{type: test_post}]
    """

    type_name = "test_post"
    audit_event = "batch_posted"
    posted: ClassVar[list[tuple[str, int]]] = []

    def write(self, frame: pd.DataFrame, batch: BatchInfo) -> int:
        self.posted.append((batch.batch_id, len(frame)))
        return len(frame)


class _PostingPlugin:
    @etrmflow.hookimpl
    def etrmflow_sink_types(self) -> list[type]:
        return [_PostingSink]


def test_a_sink_that_posts_records_batch_posted(etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("etrmflow.cli.commands.registry",
                        lambda: Registry.default(load_entry_points=False, extra_plugins=[_PostingPlugin()]))
    monkeypatch.setattr(_PostingSink, "posted", [])
    project = run_project(etrmflow_project, sandbox_vendor_factory(trades=25, api_key=CANARY))
    project.write({"pipelines/trades.yml": "name: trades\nsource: {connector: vendor, stream: trades}\n"
                                           "contract: trade\nsinks:\n"
                                           "  - {type: sqlite, path: target/etrmflow.db, table: trades}\n"
                                           "  - {type: test_post}\n"})

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    entries = read_log(project.path(LOG))
    posted = [(e["batch_id"], e["sink"], e["rows"]) for e in entries if e["event"] == "batch_posted"]
    assert posted == [(batch, "test_post", rows) for batch, rows in _PostingSink.posted]
    assert [rows for _, _, rows in posted] == [10, 9, 5]
    assert [e["rows"] for e in entries if e["event"] == "batch_written"] == [10, 9, 5]  # the sqlite sink


def test_rows_a_whole_dataset_step_holds_back_are_recorded_when_written(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    project = run_project(etrmflow_project, sandbox_vendor_factory(trades=25, api_key=CANARY))
    project.write({"pipelines/trades.yml": "name: trades\nsource: {connector: vendor, stream: trades}\n"
                                           "contract: trade\ntransforms:\n  - {type: dedupe, key: [trade_id]}\n"
                                           "sinks:\n  - {type: sqlite, path: target/etrmflow.db, table: trades}\n"})

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    written = [(e["batch_id"], e["rows"], e.get("stage")) for e in read_log(project.path(LOG))
               if e["event"] == "batch_written"]
    sink = next(iter(project.pipeline_result()["sinks"]))
    assert written[:3] == [(written[0][0], 0, None), (written[1][0], 0, None), (written[2][0], 0, None)]
    finished = written[3:]
    assert [(rows, stage) for _, rows, stage in finished] == [(24, "finish")] and project.count("trades") == 24
    # the rows name the batch their audit entry names
    assert {row[0] for row in project.query("SELECT DISTINCT _etrmflow_batch_id FROM trades")} == {finished[0][0]}
    assert [e["sink"] for e in read_log(project.path(LOG)) if e.get("stage") == "finish"] == [sink]
