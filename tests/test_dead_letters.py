"""The JSON Lines dead-letter sink against real files in tmp_path."""

from __future__ import annotations

import decimal
import json
import logging
from pathlib import Path
from typing import Any

import pluggy
import pytest
import yaml
from jsonschema import Draft202012Validator

from etrmflow import hookspecs
from etrmflow.builtins import dead_letters
from etrmflow.builtins.dead_letters import JsonlDeadLetterSink
from etrmflow.components import ContractInfo, DeadLetter, Kind, SinkContext, Violation
from etrmflow.plugins import Registry

CONTRACT = ContractInfo(name="trades", version="1.2.0", primary_key=("trade_id",), schema={})
PRICE_MISSING = Violation(pointer="/price", keyword="required", message="'price' is a required property",
                          validator="json_schema")
BAD_LEI = Violation(pointer="/buyer_lei", keyword="format", message="'X' is not a 'lei'",
                    validator="json_schema")


def letter(record_sha256: str = "r1", *violations: Violation, run_id: str = "run-1",
           record: Any = None, version: str = "1.2.0") -> DeadLetter:
    return DeadLetter(
        record=record if record is not None else {"trade_id": "T1", "prix": "40,45"},
        violations=violations or (PRICE_MISSING,), contract="trades", contract_version=version,
        connector="acme", stream="trades", page=3, request_url="https://api.example/trades?page=3",
        run_id=run_id, batch_id="b1", page_sha256="p1", record_sha256=record_sha256,
        quarantined_at="2025-03-30T01:00:00.000000Z")


def context(tmp_path: Path, run_id: str = "run-1") -> SinkContext:
    return SinkContext(pipeline="trades", run_id=run_id, contract=CONTRACT,
                       project_dir=str(tmp_path), target_dir=str(tmp_path / "target"))


def opened(tmp_path: Path, run_id: str = "run-1", **options: Any) -> JsonlDeadLetterSink:
    sink = JsonlDeadLetterSink(options)
    sink.open(context(tmp_path, run_id))
    return sink


def lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


DEFAULT = Path("target/dead_letter/trades.jsonl")


def test_plugin_registers_the_jsonl_sink_and_its_example_is_valid() -> None:
    manager = pluggy.PluginManager("etrmflow")
    manager.add_hookspecs(hookspecs)
    manager.register(dead_letters, name="etrmflow.builtins.dead_letters")
    assert Registry(manager).get(Kind.DEAD_LETTER, "jsonl") is JsonlDeadLetterSink
    example = yaml.safe_load(JsonlDeadLetterSink.__doc__.split("Example::", 1)[1])["dead_letter"]
    assert example.pop("type") == "jsonl"
    assert list(Draft202012Validator(JsonlDeadLetterSink.options_schema).iter_errors(example)) == []


def test_one_compact_sorted_utf8_line_per_letter_at_the_default_path(tmp_path: Path) -> None:
    sink = opened(tmp_path)
    assert sink.describe() == "jsonl target/dead_letter/trades.jsonl"
    record = {"zone": "Zürich", "trade_id": "T1", "amount": decimal.Decimal("606.750000000000000001")}
    assert sink.write([letter("r1", BAD_LEI, PRICE_MISSING, record=record)]) == 1
    sink.close(True)
    text = (tmp_path / DEFAULT).read_bytes().decode("utf-8")
    assert text == (
        '{"batch_id":"b1","contract":{"name":"trades","version":"1.2.0"},"page_sha256":"p1",'
        '"quarantined_at":"2025-03-30T01:00:00.000000Z","record":{"amount":"606.750000000000000001",'
        '"trade_id":"T1","zone":"Zürich"},"record_sha256":"r1","run_id":"run-1","source":'
        '{"connector":"acme","page":3,"request_url":"https://api.example/trades?page=3",'
        '"stream":"trades"},"violations":[{"keyword":"format","message":"\'X\' is not a \'lei\'",'
        '"pointer":"/buyer_lei","validator":"json_schema"},{"keyword":"required","message":'
        '"\'price\' is a required property","pointer":"/price","validator":"json_schema"}]}\n')


def test_the_same_record_for_the_same_reasons_is_stored_once_across_instances(tmp_path: Path) -> None:
    first = opened(tmp_path, path="dl/trades.jsonl")
    assert first.write([letter("r1"), letter("r1"), letter("r2")]) == 2
    first.close(True)
    second = opened(tmp_path, "run-2", path="dl/trades.jsonl")
    # Same record and reasons in another order, run or message: not new.
    again = letter("r1", run_id="run-2")
    reordered = letter("r3", BAD_LEI, PRICE_MISSING)
    assert second.write([again, letter("r2"), reordered]) == 1
    assert second.write([letter("r3", PRICE_MISSING, BAD_LEI)]) == 0
    # Other reasons, or another contract version, make it a new letter.
    assert second.write([letter("r1", BAD_LEI), letter("r1", version="1.3.0")]) == 2
    second.close(True)
    stored = lines(tmp_path / "dl/trades.jsonl")
    assert [(s["record_sha256"], s["contract"]["version"], [v["keyword"] for v in s["violations"]])
            for s in stored] == [("r1", "1.2.0", ["required"]), ("r2", "1.2.0", ["required"]),
                                 ("r3", "1.2.0", ["format", "required"]),
                                 ("r1", "1.2.0", ["format"]), ("r1", "1.3.0", ["required"])]


def test_a_truncated_last_line_is_skipped_kept_and_followed_by_a_new_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = opened(tmp_path)
    first.write([letter("r1")])
    first.close(True)
    path = tmp_path / DEFAULT
    whole = path.read_bytes()
    cut = whole + json.dumps(letter("r2").as_dict()).encode()[:40]  # a crash mid-append
    path.write_bytes(cut)
    with caplog.at_level(logging.WARNING, logger="etrmflow.dead_letter"):
        second = opened(tmp_path, "run-2")
    assert path.read_bytes() == cut
    assert [r.getMessage().split(": ", 1)[0] for r in caplog.records] == [f"{path}:2"]
    assert "cannot be read" in caplog.records[0].getMessage()
    assert second.write([letter("r1"), letter("r2")]) == 1  # r1 is known, r2 was never whole
    second.close(True)
    raw = path.read_bytes().split(b"\n")
    assert raw[0] + b"\n" == whole and raw[1] == cut[len(whole):] and raw[3] == b""
    assert json.loads(raw[2])["record_sha256"] == "r2"


def test_a_whole_last_line_without_newline_counts_and_is_not_glued_to(tmp_path: Path) -> None:
    path = tmp_path / DEFAULT
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(letter("r1").as_dict()) + "\n\n" + json.dumps(letter("r2").as_dict()))
    sink = opened(tmp_path)
    assert sink.write([letter("r2"), letter("r3")]) == 1
    sink.close(True)
    assert [s["record_sha256"] for s in lines(path)] == ["r1", "r2", "r3"]


def test_nothing_new_writes_nothing(tmp_path: Path) -> None:
    sink = opened(tmp_path)
    assert sink.write([]) == 0
    sink.close(False)
    assert (tmp_path / DEFAULT).read_bytes() == b""


def test_every_write_with_new_letters_is_synced_to_disk(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(dead_letters.os, "fsync", synced.append)
    sink = opened(tmp_path)
    sink.write([letter("r1")])
    assert len(synced) == 1
    sink.write([letter("r1")])
    sink.write([letter("r2")])
    assert len(synced) == 2
    sink.close(True)
    assert len(synced) == 3
