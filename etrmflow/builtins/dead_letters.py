"""Built-in plugin: the JSON Lines dead-letter sink."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from etrmflow import hookimpl
from etrmflow.components import DeadLetter, DeadLetterSink, SinkContext
from etrmflow.errors import SinkError
from etrmflow.sinks.common import resolve_path

log = logging.getLogger("etrmflow.dead_letter")

_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY


def _to_json(value: Any) -> Any:
    # A quarantined record must be kept whatever it holds: anything JSON has no type for is
    # written as its text (a Decimal keeps every digit) rather than failing the write.
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)


def _dedupe_key(record_sha256: str, contract: str, version: str,
                reasons: Iterable[tuple[str, str]]) -> bytes:
    """A 16-byte digest of what makes a quarantined record the same one again.

    A digest, not the tuple, so that the keys of a large file fit in memory.
    """
    text = orjson.dumps([record_sha256, contract, version, sorted(reasons)])
    return hashlib.blake2b(text, digest_size=16).digest()


def _letter_key(letter: DeadLetter) -> bytes:
    return _dedupe_key(letter.record_sha256, letter.contract, letter.contract_version,
                       ((v.keyword, v.pointer) for v in letter.violations))


def _stored_key(stored: dict[str, Any]) -> bytes:
    return _dedupe_key(stored["record_sha256"], stored["contract"]["name"],
                       stored["contract"]["version"],
                       ((v["keyword"], v["pointer"]) for v in stored["violations"]))


def read_keys(path: Path) -> tuple[set[bytes], bool]:
    """The dedupe keys of the letters already in ``path``, and whether it ends with a newline.

    Streams the file line by line. A line that does not parse (a crash cut the last append
    short) is skipped with a warning and left in the file as it is.
    """
    keys: set[bytes] = set()
    ends_with_newline = True
    if not path.exists():
        return keys, ends_with_newline
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            ends_with_newline = line.endswith(b"\n")
            if not line.strip():
                continue
            try:
                keys.add(_stored_key(orjson.loads(line)))
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                log.warning("%s:%d: skipping a dead-letter line that cannot be read (%s); an "
                            "earlier run probably crashed while writing it. The file is left "
                            "as it is.", path, number, exc)
    return keys, ends_with_newline


class JsonlDeadLetterSink(DeadLetterSink):
    """Append quarantined records to a JSON Lines file, once each, synced to disk.

    One compact JSON object per line (keys sorted, UTF-8): the record unchanged, every
    violation, the contract, the source page and lineage. A record quarantined again for the
    same reasons (same record hash, contract name and version, violation keywords and
    pointers) is not stored twice, across runs too. Every write is fsynced before it returns.

    Example::

        dead_letter:
          type: jsonl
          path: target/dead_letter/trades.jsonl
    """

    type_name = "jsonl"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "File to append to, relative to the project folder; "
                                    "default: target/dead_letter/<pipeline>.jsonl."},
        },
    }

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._handle: IO[bytes] | None = None
        self._keys: set[bytes] = set()
        self._needs_newline = False

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self.path = resolve_path(context, self._raw_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._keys, ends_with_newline = read_keys(self.path)
        self._needs_newline = not ends_with_newline  # never glue a new letter to a cut line
        self._handle = self.path.open("ab")

    def write(self, letters: list[DeadLetter]) -> int:
        if self._handle is None:
            raise SinkError("jsonl dead-letter sink: write before open")
        lines: list[bytes] = []
        keys: set[bytes] = set()
        for letter in letters:
            key = _letter_key(letter)
            if key not in self._keys and key not in keys:
                keys.add(key)
                lines.append(orjson.dumps(letter.as_dict(), default=_to_json, option=_JSON_OPTIONS))
        if lines:
            prefix = b"\n" if self._needs_newline else b""
            self._append(prefix + b"".join(lines))
            self._keys |= keys
        return len(lines)

    def close(self, ok: bool) -> None:
        if self._handle is None:
            return
        try:
            self._sync()
        finally:
            self._handle.close()
            self._handle = None

    def describe(self) -> str:
        return f"jsonl {self._raw_path()}"

    def _raw_path(self) -> str:
        context = getattr(self, "context", None)
        pipeline = context.pipeline if context else "<pipeline>"
        return self.options.get("path") or f"target/dead_letter/{pipeline}.jsonl"

    def _append(self, data: bytes) -> None:
        try:
            assert self._handle is not None
            self._handle.write(data)
            self._sync()
        except OSError as exc:
            self._needs_newline = True  # part of it may have reached the file
            raise SinkError(f"jsonl dead-letter sink: appending to {self.path} failed: {exc}") from exc
        self._needs_newline = False

    def _sync(self) -> None:
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())


@hookimpl
def etrmflow_dead_letter_types() -> list[type]:
    return [JsonlDeadLetterSink]
