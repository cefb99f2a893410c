"""Dead letters as rows: selection, key values, the table and JSON of ``etrmflow dlq list``. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from etrmflow.dlq.model import StoredLetter
from etrmflow.jsontext import escape_lone_surrogates

STATUSES = ("open", "resolved", "all")
MESSAGE_WIDTH = 70
"""Characters of the first violation a table row shows; ``--format json`` has it whole."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls, DEL, line separators and bidirectional controls: a vendor's value holding
them would move the cursor, clear the screen, retitle the window or reorder what is shown."""


def printable(text: str) -> str:
    """``text`` safe to print to a terminal: each control character (and lone surrogate) written
    as its escape (``\\x1b``, ``\\u202e``). For tables and summaries; JSON output escapes itself."""
    return _CONTROL.sub(_escape, escape_lone_surrogates(text))


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def select(letters: Sequence[StoredLetter], status: str) -> list[StoredLetter]:
    """The letters with ``status`` (``open``, ``resolved`` or ``all``)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    return [letter for letter in letters if status == "all" or str(letter.status) == status]


def find(letters: Sequence[StoredLetter], prefix: str) -> list[StoredLetter]:
    """The letters whose record hash starts with ``prefix`` (case-insensitive)."""
    wanted = prefix.strip().lower()
    return [letter for letter in letters if wanted and letter.record_sha256.startswith(wanted)]


def key_values(record: Any, primary_key: Sequence[str]) -> dict[str, Any]:
    """The record's primary-key values (None where missing, or when it is not an object)."""
    if not isinstance(record, Mapping):
        return {name: None for name in primary_key}
    return {name: record.get(name) for name in primary_key}


def violation_text(violation: Mapping[str, Any]) -> str:
    """``/counterparty_lei format: '...' is not a 'lei'``; ``/`` stands for the whole record."""
    return f"{violation.get('pointer') or '/'} {violation.get('keyword')}: {violation.get('message')}"


def row(letter: StoredLetter, primary_key: Sequence[str]) -> dict[str, Any]:
    """One letter as ``dlq list --format json`` shows it."""
    violations = letter.violations
    resolution = letter.resolution or {}
    return {
        "record_sha256": letter.record_sha256,
        "short_hash": letter.short_hash,
        "key": key_values(letter.record, primary_key),
        "contract_version": letter.contract_version,
        "first_violation": dict(violations[0]) if violations else None,
        "violations": len(violations),
        "quarantined_at": letter.quarantined_at,
        "status": str(letter.status),
        "resolved_at": resolution.get("resolved_at"),
    }


def _cell(value: Any) -> str:
    # A key with a lone surrogate (quarantined for it) or a control character is shown as its
    # escape: a terminal cannot print the one and must not obey the other.
    return "-" if value is None else printable(str(value))


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as aligned text columns, a header first."""
    header = ("HASH", "KEY", "VERSION", "FIRST VIOLATION", "QUARANTINED AT", "STATUS")
    cells = [header] + [(
        r["short_hash"], ", ".join(_cell(v) for v in r["key"].values()) or "-", r["contract_version"],
        _shorten(printable(violation_text(r["first_violation"])), MESSAGE_WIDTH) if r["first_violation"] else "-",
        r["quarantined_at"], r["status"]) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1]
                     for line in cells)


def footer(letters: Sequence[StoredLetter], shown: int, where: str) -> str:
    """``12 dead letter(s) shown; 10 open, 2 resolved in jsonl target/dead_letter/x.jsonl``."""
    resolved = sum(1 for letter in letters if str(letter.status) == "resolved")
    return (f"{shown} dead letter(s) shown; {len(letters) - resolved} open, {resolved} resolved "
            f"in {where}")
