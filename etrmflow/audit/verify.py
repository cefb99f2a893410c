"""Checking the audit log: every entry matches its hash and chains to the one before it.

What a broken chain means, line by line: an entry whose content does not match its ``hash`` was
edited; a gap in ``seq`` is a deletion; an entry that the next one skips over (its ``prev`` points
further back) was inserted; entries that chain correctly once sorted by ``seq`` were reordered; an
incomplete last line is an append cut short (a crash), not tampering, and is reported as such.
A chain alone cannot tell that the newest entries were removed from the end: an ``Expectation``
(the last entry a run recorded in run_results.json, or a hash kept elsewhere) can. With a
``BodyStore``, every body an entry says was kept is read back and hashed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from etrmflow.audit.bodies import BodyStore, file_sha256
from etrmflow.audit.chain import GENESIS, entry_hash

_REQUIRED = {"seq": int, "ts": str, "run_id": str, "pipeline": str, "event": str, "prev": str, "hash": str}


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with the log, at a line (1-based) and, when readable, the entry's seq."""

    line: int
    seq: int | None
    kind: str
    """``edited``, ``deleted``, ``inserted``, ``reordered``, ``broken``, ``malformed``, ``truncated``,
    ``body missing`` or ``body changed``."""
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    line: int
    entry: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.entry["seq"])

    @property
    def where(self) -> str:
        return f"line {self.line} (seq {self.seq})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    """The last entry the log had when it was recorded elsewhere: the log must still hold it."""

    last_hash: str
    entries: int | None = None
    """Its seq, when known (run_results.json records it)."""
    source: str = "--expect-last"
    """Where the expectation comes from, for messages."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The result of checking one log file."""

    path: Path
    entries: tuple[dict[str, Any], ...]
    problems: tuple[Problem, ...]
    bodies_checked: int = 0
    """Kept bodies read back and found matching their hash (with a ``BodyStore``)."""

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(path: Path, *, expect: Expectation | None = None, bodies: BodyStore | None = None) -> Verdict:
    """Check the whole chain of ``path`` (and the expected last entry, and kept bodies); OSError
    if the log cannot be read."""
    data = path.read_bytes()
    rows, problems = parse(data)
    problems += [Problem(line=r.line, seq=r.seq, kind="edited", message="the entry does not match its hash: "
                         "it was changed after it was written") for r in rows if entry_hash(r.entry) != r.entry["hash"]]
    problems += _chain(rows)
    if expect is not None:
        problems += _expected_end(rows, expect, data.count(b"\n") + 1)
    checked = 0
    if bodies is not None:
        body_problems, checked = _bodies(rows, bodies)
        problems += body_problems
    return Verdict(path=path, entries=tuple(r.entry for r in rows),
                   problems=tuple(sorted(problems, key=lambda p: p.line)), bodies_checked=checked)


def _expected_end(rows: list[Row], expect: Expectation, after: int) -> list[Problem]:
    """A problem if the entry ``expect`` names is gone: entries were cut from the end."""
    found = next((row for row in rows if row.entry["hash"] == expect.last_hash), None)
    if found is not None and (expect.entries is None or found.seq == expect.entries):
        return []
    last = max((row.seq for row in rows), default=0)
    recorded = f"{expect.source} names the entry with hash {expect.last_hash}" + (
        f" (seq {expect.entries})" if expect.entries is not None else "")
    if expect.entries is not None and last < expect.entries:
        gap = f"seq {last + 1}" if expect.entries == last + 1 else f"seq {last + 1} to {expect.entries}"
        return [Problem(line=after, seq=last + 1, kind="deleted", message=(
            f"{gap} missing at the end of the log: {recorded}, but the log ends at seq {last}; "
            f"entries were cut from its end"))]
    return [Problem(line=after, seq=None, kind="deleted", message=(
        f"{recorded}, which the log does not hold: entries were cut from its end, or it was "
        f"rewritten after that"))]


def _bodies(rows: list[Row], store: BodyStore) -> tuple[list[Problem], int]:
    """Every kept body, read back (once per hash): present, and hashing to what its entry says."""
    problems: list[Problem] = []
    found: dict[str, str | None] = {}
    for row in rows:
        kept = row.entry.get("kept_sha256") if row.entry["event"] == "page_fetched" else None
        if not isinstance(kept, str):
            continue
        if kept not in found:
            found[kept] = _body_problem(store, kept)
        if found[kept] is not None:
            kind, message = str(found[kept]).split(": ", 1)
            problems.append(Problem(line=row.line, seq=row.seq, kind=kind, message=message))
    return problems, sum(1 for problem in found.values() if problem is None)


def _body_problem(store: BodyStore, kept: str) -> str | None:
    """``kind: message`` of what is wrong with the kept body ``kept``; None if it is intact."""
    path = store.path(kept)
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        return f"body missing: the kept body {path} is not there"
    except OSError as exc:
        return f"body missing: the kept body {path} cannot be read: {exc.strerror or exc}"
    if actual != kept:
        return f"body changed: the kept body {path} hashes to {actual}: it was changed after it was written"
    return None
def parse(data: bytes) -> tuple[list[Row], list[Problem]]:
    """Every well-formed entry with its line number, and a problem for every other line."""
    lines = data.split(b"\n")
    torn = not data.endswith(b"\n") and data != b""
    lines = lines if torn else lines[:-1]
    rows: list[Row] = []
    problems: list[Problem] = []
    for number, raw in enumerate(lines, 1):
        if torn and number == len(lines):
            problems.append(Problem(line=number, seq=None, kind="truncated", message=(
                f"the last line is incomplete ({len(raw)} bytes, no line end): an append was cut short, "
                f"e.g. by a crash; the next run drops it and records a log_recovered entry")))
        elif (entry := _entry(raw)) is None:
            problems.append(Problem(line=number, seq=None, kind="malformed",
                                    message="not an audit entry (not JSON, or envelope keys missing)"))
        else:
            rows.append(Row(line=number, entry=entry))
            if (repeated := _repeated_key(raw, entry)) is not None:
                problems.append(Problem(line=number, seq=rows[-1].seq, kind="edited", message=(
                    f"the line names {repeated} more than once, so what it says depends on the reader: it "
                    f"was changed after it was written")))
    return rows, problems


def _repeated_key(raw: bytes, entry: dict[str, Any]) -> str | None:
    """A key an object of the line gives twice (None if none). The hash covers the parsed entry,
    where the last value wins; other readers keep the first, so such a line reads two ways.
    Cheap for a line as written (the writer's own bytes come back); parsed again only otherwise."""
    if orjson.dumps(entry) == raw:
        return None
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in items]
        repeated.extend(name for index, name in enumerate(names) if name in names[:index])
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # orjson read it; Python's reader only judges repeats
        return None
    return repeated[0] if repeated else None


def _entry(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict):
        return None
    ok = all(isinstance(entry.get(k), t) and not isinstance(entry.get(k), bool) for k, t in _REQUIRED.items())
    return entry if ok else None


def _chain(rows: list[Row]) -> list[Problem]:
    reordered = _reordering(rows)
    if reordered:
        return reordered
    position = {row.entry["hash"]: index for index, row in enumerate(rows)}
    problems: list[Problem] = []
    prev_hash, prev_seq = GENESIS, 0
    for index, row in enumerate(rows):
        if row.entry["prev"] != prev_hash or row.seq != prev_seq + 1:
            problems.append(_diagnose(rows, index, position, prev_seq))
        prev_hash, prev_seq = row.entry["hash"], row.seq
    return problems


def _diagnose(rows: list[Row], index: int, position: dict[str, int], prev_seq: int) -> Problem:
    row = rows[index]
    target = position.get(row.entry["prev"])
    before = rows[index - 1].where if index else "the start of the log"
    if target is not None and target < index - 1:
        inserted = rows[target + 1]
        return Problem(line=inserted.line, seq=inserted.seq, kind="inserted", message=(
            f"not part of the chain: {row.where} chains to {rows[target].where}, skipping "
            f"{index - 1 - target} entr{'y' if index - 1 - target == 1 else 'ies'} from here on"))
    if target is not None and target > index:
        return Problem(line=row.line, seq=row.seq, kind="reordered", message=(
            f"chains to {rows[target].where}, which comes after it"))
    if row.seq > prev_seq + 1:
        gap = f"seq {prev_seq + 1}" if row.seq == prev_seq + 2 else f"seq {prev_seq + 1} to {row.seq - 1}"
        return Problem(line=row.line, seq=row.seq, kind="deleted", message=f"{gap} missing after {before}")
    return Problem(line=row.line, seq=row.seq, kind="broken", message=(
        f"prev does not match the hash of {before}: an entry before it was changed and re-hashed, "
        f"or this one was forged"))


def _reordering(rows: list[Row]) -> list[Problem]:
    """Problems for entries out of place, if sorting by seq gives a perfect chain; else none."""
    ordered = sorted(rows, key=lambda r: r.seq)
    if ordered == rows:
        return []
    prev_hash = GENESIS
    for expected, row in enumerate(ordered, 1):
        if row.seq != expected or row.entry["prev"] != prev_hash:
            return []
        prev_hash = row.entry["hash"]
    return [Problem(line=row.line, seq=row.seq, kind="reordered", message=(
                f"belongs at line {rows[ordered.index(row)].line}: entries were moved (each is intact)"))
            for index, row in enumerate(rows) if ordered[index] is not row]
