"""The hash chain of the audit log: canonical form, entry hashes, the genesis link. Pure functions."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from etrmflow import jsontext

AUDIT_LOG = "audit/audit.jsonl"
"""Where the audit log lives, relative to the project's target folder."""
GENESIS = "0" * 64
"""The ``prev`` of the first entry: there is no entry before it."""
ENVELOPE = ("seq", "ts", "run_id", "pipeline", "event", "prev", "hash")
"""Keys every entry has; the event's own fields sit between ``event`` and ``prev``."""


def canonical(value: Any) -> bytes:
    """Sorted keys, no whitespace: the same value always gives the same bytes (numbers as sent)."""
    return jsontext.dumps(value, option=orjson.OPT_SORT_KEYS)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def records_sha256(records: list[Any]) -> str:
    """SHA-256 of a page's decoded record list, canonical form."""
    return sha256_hex(canonical(records))


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the entry without its ``hash``."""
    return sha256_hex(canonical({k: v for k, v in entry.items() if k != "hash"}))


def seal(*, seq: int, ts: str, run_id: str, pipeline: str, event: str, fields: dict[str, Any],
         prev: str) -> dict[str, Any]:
    """A complete entry, chained to ``prev`` and carrying its own hash."""
    clash = set(fields) & set(ENVELOPE)
    if clash:
        raise ValueError(f"event fields may not be named like envelope keys: {sorted(clash)}")
    entry = {"seq": seq, "ts": ts, "run_id": run_id, "pipeline": pipeline, "event": event, **fields,
             "prev": prev}
    entry["hash"] = entry_hash(entry)
    return entry


def encode(entry: dict[str, Any]) -> bytes:
    """One JSON Lines line (keys in envelope order for people; the hash does not depend on it)."""
    return orjson.dumps(entry) + b"\n"
