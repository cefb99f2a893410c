"""`etrmflow dlq`: list, show and replay dead letters. The real CLI in a temp project, against the
sandbox vendor over loopback; real SQLite, Parquet and dead-letter files."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from etrmflow.builtins.dead_letters import JsonlDeadLetterSink
from etrmflow.components import ContractInfo, DeadLetter, SinkContext, Violation
from etrmflow.dlq import LetterStatus, Resolution, replay_batch_id
from etrmflow.dlq.jsonl import JsonlDeadLetterStore
from etrmflow.dlq.replay import candidates, plan_batches
from etrmflow.sandbox import ThreadedSandbox
from etrmflow.testing import EtrmflowProject, expected_trades, sandbox_connector

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FILE = "pipelines/trades.yml"
LETTERS = "target/dead_letter/trades.jsonl"
LINEAGE = ("_etrmflow_run_id", "_etrmflow_batch_id", "_etrmflow_page_sha256", "_etrmflow_loaded_at")
BAD_LEI = {"ACME-T-0000013", "ACME-T-0000153"}
"""The sandbox's default trades (seed 7) whose only defect is the LEI check digits."""

CONNECTOR = sandbox_connector(page_size=100, auth="{type: api_key, in: header, name: X-API-Key, value: sandbox-key}")
PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
transforms:
  - {type: parse_timestamps, columns: [delivery_start, delivery_end, updated_at]}
  - {type: to_local_time, columns: [delivery_start, delivery_end], tz: Europe/Berlin}
sinks:
  - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}
  - {type: parquet, path: target/parquet/trades}
"""


def set_contract(project: EtrmflowProject, *, version: str, lei_format: bool = True) -> None:
    """The example trade contract, at ``version``, with or without the LEI check."""
    text = (REPO / "contracts/trade.yml").read_text(encoding="utf-8")
    edits = [('version: "1.0.0"', f'version: "{version}"')]
    if not lei_format:
        edits.append(("counterparty_lei: {type: string, format: lei}", "counterparty_lei: {type: string}"))
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    project.write({"contracts/trade.yml": text})


def first_run(project: EtrmflowProject, vendor: ThreadedSandbox, pipeline: str = PIPELINE) -> EtrmflowProject:
    """Load the sandbox's 238 valid trades and quarantine its 12 broken ones."""
    project.write({"connectors/vendor.yml": CONNECTOR, PIPELINE_FILE: pipeline})
    set_contract(project, version="1.0.0")
    project.env["SANDBOX_URL"] = vendor.base_url
    result = project.run("run", PIPELINE_FILE)
    assert result.exit_code == 0, result.output
    assert (project.count("trades"), project.pipeline_result()["counts"]["dead_letters_new"]) == (238, 12)
    return project


@pytest.fixture
def quarantined(etrmflow_project: EtrmflowProject, sandbox_vendor: ThreadedSandbox) -> EtrmflowProject:
    """A project whose first run quarantined 12 trades in target/dead_letter/trades.jsonl."""
    return first_run(etrmflow_project, sandbox_vendor)


def lines(project: EtrmflowProject) -> list[dict[str, Any]]:
    """Every line of the dead-letter file: letters and resolutions."""
    text = project.path(LETTERS).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def letters(project: EtrmflowProject) -> list[dict[str, Any]]:
    return [line for line in lines(project) if "resolves" not in line]


def resolutions(project: EtrmflowProject) -> list[dict[str, Any]]:
    return [line for line in lines(project) if "resolves" in line]


def hashes_of(project: EtrmflowProject, trade_ids: set[str]) -> set[str]:
    return {letter["record_sha256"] for letter in letters(project) if letter["record"]["trade_id"] in trade_ids}


def parquet_rows(project: EtrmflowProject) -> int:
    return pq.read_table(project.path("target/parquet/trades")).num_rows


def without_lineage(row: dict[str, Any]) -> dict[str, Any]:
    return {column: value for column, value in row.items() if column not in LINEAGE}


def rows_by_trade(project: EtrmflowProject, trade_ids: set[str]) -> dict[str, dict[str, Any]]:
    return {row["trade_id"]: row for row in project.rows("trades") if row["trade_id"] in trade_ids}


# --- list and show -------------------------------------------------------------------------------

def test_list_shows_one_line_per_open_letter(quarantined: EtrmflowProject) -> None:
    result = quarantined.run("dlq", "list", PIPELINE_FILE)

    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0].split() == ["HASH", "KEY", "VERSION", "FIRST", "VIOLATION", "QUARANTINED", "AT", "STATUS"]
    assert out[-1] == "12 dead letter(s) shown; 12 open, 0 resolved in jsonl target/dead_letter/trades.jsonl"
    assert len(out) == 14
    first = letters(quarantined)[0]
    assert first["record"]["trade_id"] == "ACME-T-0000013"
    assert re.split(r" {2,}", out[1]) == [
        first["record_sha256"][:12], "ACME-T-0000013, 1", "1.0.0",
        "/counterparty_lei format: '815600QY3RWYNSMWC905' is not a 'lei'", first["quarantined_at"], "open"]


def test_list_as_json_gives_key_version_first_violation_and_status(quarantined: EtrmflowProject) -> None:
    result = quarantined.run("dlq", "list", PIPELINE_FILE, "--format", "json", "--status", "all")

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = expected_trades()
    assert sorted(r["key"]["trade_id"] for r in rows) == sorted(expected.invalid)
    assert {(r["contract_version"], r["status"], r["resolved_at"]) for r in rows} == {("1.0.0", "open", None)}
    by_id = {r["key"]["trade_id"]: r for r in rows}
    assert by_id["ACME-T-0000053"]["first_violation"] == {
        "pointer": "", "keyword": "required", "message": "'price' is a required property",
        "validator": "json_schema"}
    assert by_id["ACME-T-0000053"]["key"] == {"trade_id": "ACME-T-0000053", "version": 1}
    assert all(r["short_hash"] == r["record_sha256"][:12] for r in rows)
    assert json.loads(quarantined.run("dlq", "list", PIPELINE_FILE, "--format", "json",
                                      "--status", "resolved").stdout) == []


def test_show_prints_the_whole_letter_as_json(quarantined: EtrmflowProject) -> None:
    stored = letters(quarantined)[3]

    result = quarantined.run("dlq", "show", PIPELINE_FILE, stored["record_sha256"][:7].upper())

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown.pop("status") == "open" and shown.pop("resolution") is None
    assert len(shown.pop("dedupe_key")) == 32
    assert shown == stored
    assert result.stdout.startswith('{\n  "batch_id": ')


def test_show_refuses_an_unknown_or_ambiguous_prefix(quarantined: EtrmflowProject) -> None:
    firsts = Counter(letter["record_sha256"][0] for letter in letters(quarantined))
    shared = next(char for char, count in firsts.items() if count > 1)  # 12 hashes, 16 digits
    unknown = next(char for char in "0123456789abcdef" if char not in firsts) if len(firsts) < 16 else "xyz"

    ambiguous = quarantined.run("dlq", "show", PIPELINE_FILE, shared)
    missing = quarantined.run("dlq", "show", PIPELINE_FILE, unknown)

    assert (ambiguous.exit_code, missing.exit_code) == (2, 2)
    assert f"'{shared}' matches {firsts[shared]} records" in ambiguous.stderr
    assert (f"no dead letter in jsonl target/dead_letter/trades.jsonl has a record hash starting "
            f"with '{unknown}'") in missing.stderr
    assert ambiguous.stdout == missing.stdout == ""


def test_a_pipeline_that_does_not_exist_is_a_config_error(quarantined: EtrmflowProject) -> None:
    result = quarantined.run("dlq", "list", "pipelines/nope.yml")
    assert result.exit_code == 2, result.output


# --- replay ----------------------------------------------------------------------------------------

def test_replay_loads_exactly_the_letters_that_now_pass_and_resolves_them(quarantined: EtrmflowProject) -> None:
    project = quarantined
    before = project.path(LETTERS).read_bytes()
    set_contract(project, version="1.1.0", lei_format=False)

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "OK   trades: replayed 12, now valid 2 (written to sinks), still invalid 10 against contract trade v1.1.0")
    assert "       sqlite target/etrmflow.db table trades (upsert on trade_id, version): 2 rows" in result.stdout
    assert "       dead letters: jsonl target/dead_letter/trades.jsonl (2 resolved)" in result.stdout
    assert result.stdout.endswith("Wrote target/dlq_replay_results.json\n")
    # Exactly the two now-valid trades were added, with the replay's lineage.
    assert project.count("trades") == 240
    replayed = rows_by_trade(project, BAD_LEI)
    report = project.read_json("target/dlq_replay_results.json")
    stored = {letter["record"]["trade_id"]: letter for letter in letters(project)}
    for trade, row in replayed.items():
        digest = stored[trade]["record_sha256"]
        assert (row["_etrmflow_run_id"], row["_etrmflow_batch_id"], row["_etrmflow_page_sha256"]) == (
            report["run_id"], replay_batch_id([digest]), stored[trade]["page_sha256"])
    # Append-only: the letters are untouched, one resolution line per resolved letter follows.
    after = project.path(LETTERS).read_bytes()
    assert after.startswith(before)
    assert sorted((r["resolves"]["record_sha256"], r["contract_version"], r["resolved_by_run"])
                  for r in resolutions(project)) == sorted(
        (digest, "1.1.0", report["run_id"]) for digest in hashes_of(project, BAD_LEI))
    assert report["counts"] == {"letters": 12, "replayed": 12, "valid": 2, "still_invalid": 10, "resolved": 2}
    # The letters were quarantined under 1.0.0 and re-validated with 1.1.0: the rest still fail.
    assert {tuple(o["letter_versions"]) for o in report["still_invalid"]} == {("1.0.0",)}
    assert sorted(o["key"]["trade_id"] for o in report["still_invalid"]) == sorted(
        set(expected_trades().invalid) - BAD_LEI)
    # Parquet is a snapshot of the last run: a replay must not replace it with two rows.
    assert parquet_rows(project) == 238
    assert "parquet target/parquet/trades (zstd): skipped" in result.stdout

    again = project.run("dlq", "replay", PIPELINE_FILE)

    assert again.exit_code == 0, again.output
    assert project.count("trades") == 240
    assert project.path(LETTERS).read_bytes() == after
    assert project.read_json("target/dlq_replay_results.json")["counts"] == {
        "letters": 10, "replayed": 10, "valid": 0, "still_invalid": 10, "resolved": 0}
    listed = json.loads(project.run("dlq", "list", PIPELINE_FILE, "--status", "resolved", "--format", "json").stdout)
    assert sorted(r["key"]["trade_id"] for r in listed) == sorted(BAD_LEI)


def test_replayed_rows_are_what_a_run_with_the_fixed_contract_writes(quarantined: EtrmflowProject) -> None:
    project = quarantined
    set_contract(project, version="1.1.0", lei_format=False)
    assert project.run("dlq", "replay", PIPELINE_FILE).exit_code == 0
    replayed = rows_by_trade(project, BAD_LEI)

    rerun = project.run("run", PIPELINE_FILE)

    assert rerun.exit_code == 0, rerun.output
    fetched = rows_by_trade(project, BAD_LEI)
    assert project.count("trades") == 240
    assert {t: without_lineage(r) for t, r in replayed.items()} == {t: without_lineage(r) for t, r in fetched.items()}
    assert replayed["ACME-T-0000013"]["updated_at"] == "2025-12-03T07:27:00+00:00"  # transformed, not raw "Z"
    assert project.pipeline_result()["counts"]["dead_letters_new"] == 10  # the rest, under 1.1.0


def test_dry_run_changes_nothing(quarantined: EtrmflowProject) -> None:
    project = quarantined
    before = project.path(LETTERS).read_bytes()
    set_contract(project, version="1.1.0", lei_format=False)

    result = project.run("dlq", "replay", PIPELINE_FILE, "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == ("DRY  trades: replayed 12, now valid 2 (would be written to sinks), "
                                             "still invalid 10 against contract trade v1.1.0")
    assert result.stdout.endswith("Dry run: nothing was written.\n")
    assert (project.count("trades"), parquet_rows(project)) == (238, 238)
    assert project.path(LETTERS).read_bytes() == before
    assert not project.path("target/dlq_replay_results.json").exists()


def test_letters_of_every_contract_version_are_replayed_once_per_record(quarantined: EtrmflowProject) -> None:
    project = quarantined
    set_contract(project, version="1.1.0")  # a new version that still rejects the same 12
    assert project.run("run", PIPELINE_FILE).exit_code == 0
    assert Counter(letter["contract"]["version"] for letter in letters(project)) == {"1.0.0": 12, "1.1.0": 12}
    set_contract(project, version="2.0.0", lei_format=False)

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 0, result.output
    report = project.read_json("target/dlq_replay_results.json")
    assert report["counts"] == {"letters": 24, "replayed": 12, "valid": 2, "still_invalid": 10, "resolved": 4}
    assert {tuple(o["letter_versions"]) for o in report["valid"]} == {("1.0.0", "1.1.0")}
    assert project.count("trades") == 240
    assert Counter(r["contract_version"] for r in resolutions(project)) == {"2.0.0": 4}


def test_a_record_quarantined_again_after_its_replay_is_a_new_open_letter(quarantined: EtrmflowProject) -> None:
    project = quarantined
    set_contract(project, version="1.0.0", lei_format=False)  # the fix, without a version bump
    assert project.run("dlq", "replay", PIPELINE_FILE).exit_code == 0
    set_contract(project, version="1.0.0")  # ... and reverted

    rerun = project.run("run", PIPELINE_FILE)

    assert rerun.exit_code == 0, rerun.output
    assert project.pipeline_result()["counts"]["dead_letters_new"] == 2
    listed = json.loads(project.run("dlq", "list", PIPELINE_FILE, "--status", "all", "--format", "json").stdout)
    assert Counter((r["key"]["trade_id"], r["status"]) for r in listed if r["key"]["trade_id"] in BAD_LEI) == {
        ("ACME-T-0000013", "resolved"): 1, ("ACME-T-0000013", "open"): 1,
        ("ACME-T-0000153", "resolved"): 1, ("ACME-T-0000153", "open"): 1}


def test_a_failing_sink_fails_the_replay_and_leaves_the_letters_open(quarantined: EtrmflowProject) -> None:
    project = quarantined
    before = project.path(LETTERS).read_bytes()
    set_contract(project, version="1.1.0", lei_format=False)
    # The table exists with primary key (trade_id, version): the sink refuses another key.
    project.write({PIPELINE_FILE: PIPELINE.replace("mode: upsert}", "mode: upsert, key: [trade_id]}")})

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 1, result.output
    report = project.read_json("target/dlq_replay_results.json")
    assert (report["exit_code"], report["error_type"], report["counts"]["resolved"]) == (1, "SinkError", 0)
    assert result.stdout.splitlines()[0].startswith("FAIL trades: replayed 12, now valid 2")
    assert project.path(LETTERS).read_bytes() == before
    assert project.count("trades") == 238


def test_a_pipeline_whose_sinks_all_replace_their_output_resolves_nothing(quarantined: EtrmflowProject) -> None:
    project = quarantined
    before = project.path(LETTERS).read_bytes()
    set_contract(project, version="1.1.0", lei_format=False)
    project.write({PIPELINE_FILE: PIPELINE.split("sinks:")[0] + "sinks:\n  - {type: parquet, path: target/parquet/trades}\n"})

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 1, result.output
    assert "every sink of this pipeline replaces its output on each run" in result.stdout
    assert (project.path(LETTERS).read_bytes(), parquet_rows(project)) == (before, 238)


@pytest.mark.parametrize("mode", ["replace_partition", "replace"])
def test_a_replay_never_replaces_what_a_run_loaded(mode: str, etrmflow_project: EtrmflowProject,
                                                   sandbox_vendor: ThreadedSandbox) -> None:
    # Written in its own "run", the replayed records would make the partitions they fall in (or
    # the whole table) hold only them: the rows the run loaded there would be deleted.
    partition = ", partition_by: [product_code]" if mode == "replace_partition" else ""
    sinks = f"sinks:\n  - {{type: sqlite, path: target/etrmflow.db, table: trades, mode: {mode}{partition}}}\n"
    project = first_run(etrmflow_project, sandbox_vendor, PIPELINE.split("sinks:")[0] + sinks)
    loaded = project.rows("trades")
    before = project.path(LETTERS).read_bytes()
    set_contract(project, version="1.1.0", lei_format=False)

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 1, result.output
    assert re.search(rf"\n +sqlite target/etrmflow\.db table trades \({mode}[^)]*\): skipped \(each run replaces ",
                     result.stdout), result.stdout
    assert "every sink of this pipeline replaces its output on each run" in result.stdout
    assert project.rows("trades") == loaded
    assert project.path(LETTERS).read_bytes() == before


def test_sqlite_dead_letters_are_listed_replayed_and_resolved_in_their_rows(
        etrmflow_project: EtrmflowProject, sandbox_vendor: ThreadedSandbox) -> None:
    project = first_run(etrmflow_project, sandbox_vendor, PIPELINE + "dead_letter: {type: sqlite}\n")
    listed = json.loads(project.run("dlq", "list", PIPELINE_FILE, "--format", "json").stdout)
    assert sorted(r["key"]["trade_id"] for r in listed) == sorted(expected_trades().invalid)
    lei = next(r for r in listed if r["key"]["trade_id"] == "ACME-T-0000013")
    shown = json.loads(project.run("dlq", "show", PIPELINE_FILE, lei["short_hash"]).stdout)
    assert (shown["record"]["counterparty_lei"], shown["contract"], shown["status"]) == (
        "815600QY3RWYNSMWC905", {"name": "trade", "version": "1.0.0"}, "open")
    set_contract(project, version="1.1.0", lei_format=False)

    result = project.run("dlq", "replay", PIPELINE_FILE)

    assert result.exit_code == 0, result.output
    assert "       dead letters: sqlite target/etrmflow.db table dead_letters (2 resolved)" in result.stdout
    run_id = project.read_json("target/dlq_replay_results.json")["run_id"]
    statuses = "SELECT json_extract(record, '$.trade_id'), status, resolved_by_run FROM dead_letters ORDER BY id"
    after = project.query(statuses)
    assert [(t, s, r) for t, s, r in after if s == "resolved"] == [
        ("ACME-T-0000013", "resolved", run_id), ("ACME-T-0000153", "resolved", run_id)]
    assert (len(after), project.count("trades")) == (12, 240)

    again = project.run("dlq", "replay", PIPELINE_FILE)

    assert again.exit_code == 0, again.output
    assert (project.query(statuses), project.count("trades")) == (after, 240)


# --- the jsonl store and the sink's dedupe, on files ----------------------------------------------

CONTRACT = ContractInfo(name="trade", version="1.0.0", primary_key=("trade_id",), schema={})
MISSING = Violation(pointer="", keyword="required", message="'price' is a required property", validator="json_schema")


def dead_letter(digest: str, page: str = "p1", version: str = "1.0.0") -> DeadLetter:
    return DeadLetter(record={"trade_id": digest.upper()}, violations=(MISSING,), contract="trade",
                      contract_version=version, connector="acme", stream="trades", page=0, request_url="u",
                      run_id="r", batch_id="b", page_sha256=page, record_sha256=digest,
                      quarantined_at="2025-03-30T01:00:00.000Z")


def stored(tmp_path: Path, *written: DeadLetter) -> JsonlDeadLetterStore:
    context = SinkContext(pipeline="trades", run_id="r", contract=CONTRACT, project_dir=str(tmp_path),
                          target_dir=str(tmp_path / "target"))
    sink = JsonlDeadLetterSink({})
    sink.open(context)
    sink.write(list(written))
    sink.close(True)
    return JsonlDeadLetterStore(sink.path, "x.jsonl")


def resolution(letter_key: str, digest: str, batch: str = "b1") -> Resolution:
    return Resolution(record_sha256=digest, dedupe_key=letter_key, resolved_at="2025-04-01T00:00:00.000Z",
                      resolved_by_run="replay-1", contract_version="1.1.0", batch_id=batch)


def test_the_store_resolves_by_appending_once_and_the_sink_forgets_resolved_keys(tmp_path: Path) -> None:
    store = stored(tmp_path, dead_letter("aa"), dead_letter("bb"))
    first, second = store.letters()
    original = store.path.read_bytes()

    assert store.resolve([resolution(first.key, "aa"), resolution(first.key, "aa")]) == 1
    assert store.resolve([resolution(first.key, "aa")]) == 0

    text = store.path.read_bytes()
    assert text.startswith(original) and text.count(b"\n") == 3
    assert json.loads(text.splitlines()[2]) == {
        "resolves": {"record_sha256": "aa", "dedupe_key": first.key}, "resolved_at": "2025-04-01T00:00:00.000Z",
        "resolved_by_run": "replay-1", "contract_version": "1.1.0", "batch_id": "b1"}
    assert [(s.record_sha256, s.status) for s in store.letters()] == [
        ("aa", LetterStatus.RESOLVED), ("bb", LetterStatus.OPEN)]
    assert second.key == store.letters()[1].key
    # The sink at open knows bb (not new) but no longer aa: quarantined again, it is a new letter.
    again = stored(tmp_path, dead_letter("aa"), dead_letter("bb"))
    assert [(s.record_sha256, s.status) for s in again.letters()] == [
        ("aa", LetterStatus.RESOLVED), ("bb", LetterStatus.OPEN), ("aa", LetterStatus.OPEN)]


def test_a_resolution_after_a_cut_line_starts_on_a_new_line(tmp_path: Path) -> None:
    store = stored(tmp_path, dead_letter("aa"))
    key = store.letters()[0].key
    with store.path.open("ab") as handle:
        handle.write(b'{"record": {"trade_')  # a crash mid-append

    assert store.resolve([resolution(key, "aa")]) == 1

    assert store.path.read_bytes().splitlines()[1] == b'{"record": {"trade_'
    assert [s.status for s in store.letters()] == [LetterStatus.RESOLVED]


def test_replay_batches_split_by_page_and_size_with_ids_from_the_record_hashes(tmp_path: Path) -> None:
    store = stored(tmp_path, dead_letter("aa", "p1"), dead_letter("bb", "p2"), dead_letter("cc", "p1"),
                   dead_letter("aa", "p1", version="1.1.0"))
    todo = candidates(store.letters())
    assert [(c.record_sha256, len(c.letters)) for c in todo] == [("aa", 2), ("bb", 1), ("cc", 1)]

    batches = plan_batches(todo, run_id="r2", pipeline="trades", size=1)
    whole = plan_batches(todo, run_id="r2", pipeline="trades")

    assert [(b.page_sha256, [c.record_sha256 for c in group]) for b, group in batches] == [
        ("p1", ["aa"]), ("p1", ["cc"]), ("p2", ["bb"])]
    assert [(b.batch_id, b.run_id) for b, _ in whole] == [
        (replay_batch_id(["cc", "aa"]), "r2"), (replay_batch_id(["bb"]), "r2")]
    assert replay_batch_id(["aa", "cc"]) == replay_batch_id(["cc", "aa"]) != replay_batch_id(["aa"])
