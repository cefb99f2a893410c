"""The SQLite dead-letter sink against real databases in tmp_path, and in a real run."""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from etrmflow.builtins.dead_letters import JsonlDeadLetterSink
from etrmflow.builtins.dead_letters_sqlite import SqliteDeadLetterSink
from etrmflow.components import ContractInfo, DeadLetter, Kind, SinkContext, Violation
from etrmflow.errors import SinkError
from etrmflow.plugins import Registry
from etrmflow.testing import (
    EtrmflowProject,
    SandboxFactory,
    expected_trades,
    sandbox_connector,
)

REPO = Path(__file__).resolve().parents[1]
CONTRACT = ContractInfo(name="trades", version="1.2.0", primary_key=("trade_id",), schema={})
PRICE_MISSING = Violation(pointer="", keyword="required", message="'price' is a required property",
                          validator="json_schema")
BAD_LEI = Violation(pointer="/buyer_lei", keyword="format", message="'X' is not a 'lei'", validator="json_schema")


def letter(record_sha256: str = "r1", *violations: Violation, run_id: str = "run-1", record: Any = None,
           version: str = "1.2.0") -> DeadLetter:
    return DeadLetter(
        record=record if record is not None else {"trade_id": "T1", "prix": "40,45"},
        violations=violations or (PRICE_MISSING,), contract="trades", contract_version=version,
        connector="acme", stream="trades", page=3, request_url="https://api.example/trades?page=3",
        run_id=run_id, batch_id="b1", page_sha256="p1", record_sha256=record_sha256,
        quarantined_at="2025-03-30T01:00:00.000000Z")


def opened(tmp_path: Path, run_id: str = "run-1", **options: Any) -> SqliteDeadLetterSink:
    sink = SqliteDeadLetterSink(options)
    sink.open(SinkContext(pipeline="trades", run_id=run_id, contract=CONTRACT, project_dir=str(tmp_path),
                          target_dir=str(tmp_path / "target")))
    return sink


def rows(database: Path, table: str = "dead_letters") -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY id")]


def expected_key(record_sha256: str, version: str, reasons: list[list[str]]) -> str:
    """The jsonl sink's dedupe key, computed independently: blake2b-128 of the sorted reasons."""
    text = orjson.dumps([record_sha256, "trades", version, sorted(reasons)])
    return hashlib.blake2b(text, digest_size=16).hexdigest()


DATABASE = Path("target/etrmflow.db")


def test_registered_through_the_dead_letter_hook_with_a_valid_example() -> None:
    registry = Registry.default(load_entry_points=False)
    assert registry.get(Kind.DEAD_LETTER, "sqlite") is SqliteDeadLetterSink
    assert {e.origin for e in registry.entries() if e.kind is Kind.DEAD_LETTER} == {"builtin"}
    example = yaml.safe_load(SqliteDeadLetterSink.__doc__.split("Example::", 1)[1])["dead_letter"]
    assert example.pop("type") == "sqlite"
    assert list(Draft202012Validator(SqliteDeadLetterSink.options_schema).iter_errors(example)) == []


def test_every_field_is_a_column_and_a_new_letter_is_open(tmp_path: Path) -> None:
    sink = opened(tmp_path)
    record = {"zone": "Zürich", "trade_id": "T1", "amount": decimal.Decimal("606.750000000000000001")}

    assert sink.write([letter("r1", PRICE_MISSING, BAD_LEI, record=record)]) == 1
    sink.close(True)

    assert sink.describe() == "sqlite target/etrmflow.db table dead_letters"
    assert rows(tmp_path / DATABASE) == [{
        "id": 1, "dedupe_key": expected_key("r1", "1.2.0", [["format", "/buyer_lei"], ["required", ""]]),
        "pipeline": "trades", "contract": "trades", "contract_version": "1.2.0", "record_sha256": "r1",
        "record": '{"amount":"606.750000000000000001","trade_id":"T1","zone":"Zürich"}',
        "violations": '[{"keyword":"required","message":"\'price\' is a required property","pointer":"",'
                      '"validator":"json_schema"},{"keyword":"format","message":"\'X\' is not a \'lei\'",'
                      '"pointer":"/buyer_lei","validator":"json_schema"}]',
        "connector": "acme", "stream": "trades", "page": 3, "request_url": "https://api.example/trades?page=3",
        "run_id": "run-1", "batch_id": "b1", "page_sha256": "p1", "quarantined_at": "2025-03-30T01:00:00.000000Z",
        "status": "open", "resolved_at": None, "resolved_by_run": None,
    }]


def test_the_same_letter_is_stored_once_across_runs_with_the_jsonl_sinks_key(tmp_path: Path) -> None:
    first = opened(tmp_path, path="dl.db", table="letters")
    assert first.write([letter("r1"), letter("r1"), letter("r2")]) == 2
    first.close(True)
    second = opened(tmp_path, "run-2", path="dl.db", table="letters")
    # Same record and reasons in another order or another run: not new.
    assert second.write([letter("r1", run_id="run-2"), letter("r3", BAD_LEI, PRICE_MISSING)]) == 1
    assert second.write([letter("r3", PRICE_MISSING, BAD_LEI)]) == 0
    # Other reasons, or another contract version, make it a new letter.
    assert second.write([letter("r1", BAD_LEI), letter("r1", version="1.3.0")]) == 2
    second.close(True)

    stored = [(r["record_sha256"], r["contract_version"], [v["keyword"] for v in orjson.loads(r["violations"])])
              for r in rows(tmp_path / "dl.db", "letters")]
    assert stored == [("r1", "1.2.0", ["required"]), ("r2", "1.2.0", ["required"]),
                      ("r3", "1.2.0", ["format", "required"]), ("r1", "1.2.0", ["format"]),
                      ("r1", "1.3.0", ["required"])]


def test_both_sinks_call_the_same_letters_new(tmp_path: Path) -> None:
    batches = [[letter("r1"), letter("r2", BAD_LEI)], [letter("r2", BAD_LEI), letter("r1", BAD_LEI)],
               [letter("r1", version="2")]]
    jsonl = JsonlDeadLetterSink({})
    jsonl.open(SinkContext(pipeline="trades", run_id="run-1", contract=CONTRACT, project_dir=str(tmp_path),
                           target_dir=str(tmp_path / "target")))
    sqlite = opened(tmp_path)

    counts = [(jsonl.write(batch), sqlite.write(batch)) for batch in batches]

    assert counts == [(2, 2), (1, 1), (1, 1)]
    jsonl.close(True)
    sqlite.close(True)


def test_a_resolved_letter_quarantined_again_is_a_new_open_letter(tmp_path: Path) -> None:
    sink = opened(tmp_path)
    sink.write([letter("r1"), letter("r2")])
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as db, db:
        db.execute("UPDATE dead_letters SET status = 'resolved', resolved_at = '2025-04-01T00:00:00Z', "
                   "resolved_by_run = 'run-9' WHERE record_sha256 = 'r1'")

    assert sink.write([letter("r1", run_id="run-10"), letter("r2", run_id="run-10")]) == 1
    sink.close(True)

    assert [(r["record_sha256"], r["status"], r["resolved_by_run"], r["run_id"]) for r in rows(tmp_path / DATABASE)] == [
        ("r1", "resolved", "run-9", "run-1"), ("r2", "open", None, "run-1"), ("r1", "open", None, "run-10")]


def test_a_failing_write_is_rolled_back_whole(tmp_path: Path) -> None:
    sink = opened(tmp_path)
    broken = dataclasses.replace(letter("r2"), connector=None)  # NOT NULL fails on the second row

    with pytest.raises(SinkError) as caught:
        sink.write([letter("r1"), broken])

    assert str(caught.value).startswith(f"sqlite dead-letter sink: storing 2 letter(s) in table dead_letters of "
                                        f"{tmp_path / DATABASE} failed and was rolled back: NOT NULL constraint")
    assert sink.write([letter("r1")]) == 1  # the connection is usable, and r1 was not stored before
    sink.close(True)
    assert len(rows(tmp_path / DATABASE)) == 1


def test_status_is_open_or_resolved_only(tmp_path: Path) -> None:
    opened(tmp_path).close(True)
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO dead_letters (dedupe_key, pipeline, contract, contract_version, record_sha256, "
                   "record, violations, connector, stream, page, request_url, run_id, batch_id, page_sha256, "
                   "quarantined_at, status) VALUES ('k', 'p', 'c', '1', 'r', '{}', '[]', 'c', 's', 0, 'u', 'r', "
                   "'b', 'p', 'q', 'ignored')")


def test_a_table_of_another_shape_is_refused_at_open(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as db:
        db.execute("CREATE TABLE trades (trade_id TEXT PRIMARY KEY, record TEXT)")

    with pytest.raises(SinkError) as caught:
        opened(tmp_path, table="trades")

    assert str(caught.value).startswith(f"sqlite dead-letter sink: table trades in {tmp_path / DATABASE} is not a "
                                        f"dead-letter table (no column id, dedupe_key, pipeline, contract,")


def test_write_before_open_is_an_error() -> None:
    with pytest.raises(SinkError, match="write before open"):
        SqliteDeadLetterSink({}).write([letter()])


CONNECTOR = sandbox_connector(page_size=20)
PIPELINE = """\
name: trades
source: {connector: vendor, stream: trades}
contract: trade
sinks: [{type: sqlite, table: trades}]
dead_letter: {type: sqlite}
"""


def test_a_run_and_its_rerun_store_each_invalid_record_once(etrmflow_project: EtrmflowProject,
                                                            sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=100)
    project = etrmflow_project
    project.write({"connectors/vendor.yml": CONNECTOR, "pipelines/trades.yml": PIPELINE})
    project.copy_from(REPO, "contracts")
    project.env.update(SANDBOX_URL=vendor.base_url, SANDBOX_KEY="sandbox-key")

    runs = [project.run("run", "pipelines/trades.yml") for _ in range(2)]

    assert [r.exit_code for r in runs] == [0, 0], runs[-1].output
    assert "dead letters: sqlite target/etrmflow.db table dead_letters (0 new)" in runs[1].stdout
    counts = project.pipeline_result()["counts"]
    letters = project.rows("dead_letters")
    expected = expected_trades(vendor.config)
    assert (counts["quarantined"], counts["dead_letters_new"], len(letters)) == (5, 0, 5)
    assert {orjson.loads(r["record"])["trade_id"] for r in letters} == set(expected.invalid)
    assert {r["status"] for r in letters} == {"open"} and {r["pipeline"] for r in letters} == {"trades"}
    assert project.count("trades") == len(expected.valid) == 95
