"""Adversarial cases of `etrmflow audit`: tampering a plain hash chain must still catch, and log
text that must not drive the terminal. Real log files written by AuditLog, the real CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from etrmflow.audit import AuditLog, canonical, verify
from etrmflow.testing import EtrmflowProject

LOG = "target/audit/audit.jsonl"


def write_log(path: Path) -> list[bytes]:
    """Five genuine entries of two interleaved runs, as the engine writes them; their lines."""
    log = AuditLog(path)
    log.append(run_id="r1", pipeline="trades", events=[("run_started", {"resumed_from_page": None})])
    log.append(run_id="r2", pipeline="power", events=[("run_started", {"resumed_from_page": None})])
    log.append(run_id="r1", pipeline="trades", events=[
        ("page_fetched", {"page": 0, "body_sha256": "a" * 64}),
        ("batch_written", {"batch_id": "b0", "sink": "sqlite", "rows": 10})])
    log.append(run_id="r2", pipeline="power", events=[("run_finished", {"status": "success"})])
    return path.read_bytes().splitlines(keepends=True)


def sealed(entry: dict[str, Any]) -> bytes:
    """An entry with a correct hash of its own, as a forger who knows the format writes it."""
    entry = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = hashlib.sha256(canonical(entry)).hexdigest()
    return orjson.dumps(entry) + b"\n"


def problems(path: Path) -> list[str]:
    return [str(p) for p in verify(path).problems]


def test_two_interleaved_runs_make_one_intact_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    assert problems(path) == []


def test_a_key_given_twice_in_an_entry_is_tampering_though_the_hash_matches(tmp_path: Path) -> None:
    # JSON readers disagree on a repeated key (most keep the last, some the first): a line that
    # says "rows" twice can be read as 99 rows by one tool and as the hashed 10 by another.
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    assert b'"rows":10' in lines[3]
    lines[3] = lines[3].replace(b'"rows":10', b'"rows":99,"rows":10')
    path.write_bytes(b"".join(lines))

    assert problems(path) == [
        ("line 4 (seq 4): edited: the line names rows more than once, so what it says depends on the "
         "reader: it was changed after it was written")]


def test_an_entry_edited_and_rehashed_breaks_the_link_to_the_next(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    lines[3] = sealed({**orjson.loads(lines[3]), "rows": 11})
    path.write_bytes(b"".join(lines))

    assert problems(path) == [
        ("line 5 (seq 5): broken: prev does not match the hash of line 4 (seq 4): an entry before it was "
         "changed and re-hashed, or this one was forged")]


@pytest.mark.parametrize("seq", [5, 7])
def test_a_forged_last_entry_with_a_valid_prev_but_a_wrong_seq_is_found(seq: int, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    last = orjson.loads(lines[-1])
    forged = sealed({**last, "seq": seq, "event": "batch_written", "rows": 5, "prev": last["hash"]})
    path.write_bytes(b"".join(lines) + forged)

    assert verify(path).problems and all("line 6" in p for p in problems(path)), problems(path)


def test_audit_show_prints_control_characters_as_escapes(etrmflow_project: EtrmflowProject) -> None:
    # An error or URL in the log can hold what a vendor sent; the table must not let it drive
    # the terminal (clear the screen, retitle the window, reverse the text).
    path = etrmflow_project.path(LOG)
    AuditLog(path).append(run_id="r1", pipeline="trades", events=[(
        "run_finished", {"status": "failed", "error": "vendor said: \x1b]0;owned\x07\x1b[2J\u009b1m\u202e"})])

    shown = etrmflow_project.run("audit", "show")
    as_json = etrmflow_project.run("audit", "show", "--format", "json")

    assert shown.exit_code == 0, shown.output
    assert not set(shown.stdout) & {"\x1b", "\x07", "\u009b", "\u202e"}, repr(shown.stdout)
    assert r"error=vendor said: \x1b]0;owned\x07\x1b[2J\x9b1m\u202e" in shown.stdout
    assert orjson.loads(as_json.stdout)["error"] == "vendor said: \x1b]0;owned\x07\x1b[2J\u009b1m\u202e"
