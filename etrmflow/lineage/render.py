"""``etrmflow lineage`` for people: one block per stored version and per dead letter."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from etrmflow.dlq.listing import printable
from etrmflow.lineage.model import Fetch, Lineage, Quarantined, Written

_SHORT = 16


def table(found: Lineage) -> str:
    """The lineage as indented text lines."""
    key = " ".join(f"{k}={v}" for k, v in found.key.items())
    lines = [(f"{found.pipeline}: {key}: {len(found.written)} row(s) written, "
              f"{len(found.quarantined)} dead letter(s)")]
    for written in found.written:
        lines.extend(_written(written))
    for letter in found.quarantined:
        lines.extend(_quarantined(letter))
    lines.extend(f"note: {note}" for note in found.notes)
    # Values come from vendors: a control character in one must not drive the terminal.
    return "\n".join(printable(line) for line in lines)


def _written(written: Written) -> Iterator[str]:
    yield f"written to {written.sink}:"
    yield f"  {_values(written.values)}"
    yield (f"  run {written.run_id}, batch {written.batch_id}, page {_short(written.page_sha256)}, "
           f"loaded at {written.loaded_at}")
    yield from _fetches(written.fetches)


def _quarantined(quarantined: Quarantined) -> Iterator[str]:
    letter = quarantined.letter
    yield (f"dead letter ({quarantined.status}), record {_short(letter.get('record_sha256'))}, "
           f"contract {letter.get('contract', {}).get('version')}:")
    yield f"  {_values(letter.get('record'))}"
    for violation in letter.get("violations") or ():
        yield f"  {violation.get('pointer') or '/'} {violation.get('keyword')}: {violation.get('message')}"
    yield (f"  run {letter.get('run_id')}, batch {letter.get('batch_id')}, page {_short(letter.get('page_sha256'))}, "
           f"quarantined at {letter.get('quarantined_at')}")
    if not quarantined.fetches:
        yield f"  request (from the dead letter): {letter.get('source', {}).get('request_url')}"
    yield from _fetches(quarantined.fetches)


def _fetches(fetches: tuple[Fetch, ...]) -> Iterator[str]:
    if not fetches:
        yield "  fetched: no page_fetched entry in the audit log for this page"
    for fetch in fetches:
        yield (f"  fetched: {fetch.method} {fetch.url} -> {fetch.status} at {fetch.fetched_at} "
               f"(run {fetch.run_id}, page {fetch.page}, audit seq {fetch.seq})")


def _values(values: Any) -> str:
    if not isinstance(values, Mapping):
        return repr(values)
    return " ".join(f"{k}={v}" for k, v in values.items())


def _short(value: Any) -> str:
    return str(value)[:_SHORT] if value else "-"
