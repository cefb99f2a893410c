"""Built-in plugin: the JSON Lines dead-letter sink (and the registration of the SQLite one)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import orjson

from etrmflow import hookimpl, jsontext
from etrmflow.components import DeadLetter, DeadLetterSink, SinkContext
from etrmflow.errors import SinkError, write_failure
from etrmflow.sinks.common import project_file, resolve_path

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

    A digest, not the tuple, so that the keys of a large file fit in memory. ``jsontext``
    writes what orjson writes, and a pointer with a lone surrogate too.
    """
    text = jsontext.dumps([record_sha256, contract, version, sorted(reasons)])
    return hashlib.blake2b(text, digest_size=16).digest()


def _letter_key(letter: DeadLetter) -> bytes:
    return _dedupe_key(letter.record_sha256, letter.contract, letter.contract_version,
                       ((v.keyword, v.pointer) for v in letter.violations))


def _stored_key(stored: dict[str, Any]) -> bytes:
    return _dedupe_key(stored["record_sha256"], stored["contract"]["name"],
                       stored["contract"]["version"],
                       ((v["keyword"], v["pointer"]) for v in stored["violations"]))


RESOLVES = "resolves"
"""The field that marks a resolution line: ``{"resolves": {"record_sha256", "dedupe_key"}, ...}``.

The file is append-only, history included: a dead letter is never rewritten. A replay that
loads a quarantined record appends a resolution line naming the letter's dedupe key (hex);
the letter counts as resolved from that line on.
"""

PIPELINE = "pipeline"
"""The pipeline that wrote a line (letter or resolution) to a file given by ``path``, which
pipelines may share: each reads, dedupes and replays only its own lines, and lines without it
(in a pipeline's own default file, or written before it was recorded) as everyone's."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One readable line of a dead-letter file: a letter, or the resolution of one."""

    line: int
    data: dict[str, Any]
    key: bytes
    """The letter's dedupe key, or for a resolution line the key of the letter it resolves."""

    @property
    def resolves(self) -> bool:
        return RESOLVES in self.data

    def of(self, pipeline: str | None) -> bool:
        """Whether the line belongs to ``pipeline`` (None: to any)."""
        return pipeline is None or self.data.get(PIPELINE, pipeline) == pipeline


def _entry_key(data: dict[str, Any]) -> bytes:
    if RESOLVES in data:
        return bytes.fromhex(data[RESOLVES]["dedupe_key"])
    return _stored_key(data)


def read_entries(path: Path) -> Iterator[Entry]:
    """The letters and resolutions in ``path``, in file order; nothing if it does not exist.

    Streams the file line by line. A line that does not parse (a crash cut the last append
    short) is skipped with a warning and left in the file as it is.
    """
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                # A letter's record replays with the digits it was sent with, and a lone surrogate
                # as its escape (written back so by jsontext.dumps) is read too, marked.
                data = jsontext.loads(line, lone_surrogates=True)
                key = _entry_key(data)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.warning("%s:%d: skipping a dead-letter line that cannot be read (%s); an "
                            "earlier run probably crashed while writing it. The file is left "
                            "as it is.", path, number, exc)
                continue
            yield Entry(line=number, data=data, key=key)


def append_synced(fd: int, data: bytes) -> None:
    """All of ``data`` appended to the open file and synced, or none of it: on an OSError (a
    full disk) the file is cut back to its size before, where it can be, and the error raised."""
    size = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def ends_with_newline(path: Path) -> bool:
    """False when the last append was cut short: the next one must start on a new line."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_keys(path: Path, pipeline: str | None = None) -> tuple[set[bytes], bool]:
    """The dedupe keys of the open letters of ``pipeline`` in ``path``, and whether it ends with
    a newline.

    A resolved letter's key is left out: the same record quarantined again for the same reasons
    after a replay loaded it is a new event, stored as a new open letter.
    """
    keys: set[bytes] = set()
    for entry in read_entries(path):
        if not entry.of(pipeline):
            continue
        if entry.resolves:
            keys.discard(entry.key)
        else:
            keys.add(entry.key)
    return keys, ends_with_newline(path)


def jsonl_path(options: Mapping[str, Any], context: SinkContext) -> Path:
    """The file a jsonl dead-letter sink with these options appends to."""
    return resolve_path(context, options.get("path") or _default_path(context.pipeline))


def _default_path(pipeline: str) -> str:
    return f"target/dead_letter/{pipeline}.jsonl"


def pipeline_tag(options: Mapping[str, Any], context: SinkContext) -> dict[str, str]:
    """``{"pipeline": name}`` for the lines of a file other pipelines may share too; nothing for
    the pipeline's own default file."""
    shared = jsonl_path(options, context) != resolve_path(context, _default_path(context.pipeline))
    return {PIPELINE: context.pipeline} if shared else {}


class JsonlDeadLetterSink(DeadLetterSink):
    """Append quarantined records to a JSON Lines file, once each, synced to disk.

    One compact JSON object per line (keys sorted, UTF-8): the record unchanged, every
    violation, the contract, the source page and lineage. A record quarantined again for the
    same reasons (same record hash, contract name and version, violation keywords and
    pointers) is not stored twice, across runs too, unless ``etrmflow dlq replay`` resolved the
    earlier letter (resolution lines are appended; nothing is ever rewritten). Every write is
    fsynced before it returns.

    Example::

        dead_letter:
          type: jsonl
          path: target/dead_letter/trades.jsonl
    """

    type_name = "jsonl"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "File to append to, relative to the project folder; "
                                    "default: target/dead_letter/<pipeline>.jsonl."},
        },
    }

    @classmethod
    def written_output(cls, options: Any, project_dir: str) -> tuple[str, bool] | None:
        """Its file when the path is given (``etrmflow.config.outputs``): letters are appended,
        but a CSV sink writing that path would replace them."""
        return (project_file(options["path"], project_dir), False) if "path" in options else None

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._handle: IO[bytes] | None = None
        self._keys: set[bytes] = set()
        self._tag: dict[str, str] = {}
        self._needs_newline = False

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self.path = jsonl_path(self.options, context)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._keys, complete = read_keys(self.path, context.pipeline)
            self._tag = pipeline_tag(self.options, context)
            self._needs_newline = not complete  # never glue a new letter to a cut line
            # Unbuffered: a failed append is cut off again, and no buffer may write it later.
            self._handle = self.path.open("ab", buffering=0)
        except OSError as exc:
            raise SinkError(f"jsonl dead-letter sink: cannot open {self.path}: {write_failure(exc)}") from exc

    def write(self, letters: list[DeadLetter]) -> int:
        if self._handle is None:
            raise SinkError("jsonl dead-letter sink: write before open")
        lines: list[bytes] = []
        keys: set[bytes] = set()
        for letter in letters:
            key = _letter_key(letter)
            if key not in self._keys and key not in keys:
                keys.add(key)
                data = {**letter.as_dict(), **self._tag}
                lines.append(jsontext.dumps(data, default=_to_json, option=_JSON_OPTIONS))
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
        return self.options.get("path") or _default_path(pipeline)

    def _append(self, data: bytes) -> None:
        """All of ``data``, synced, or none of it: letters that did not fit (a full disk) are cut
        off again, so the page fails before its valid records are written and nothing is half
        kept; ``run --resume`` stores them with the page."""
        assert self._handle is not None
        try:
            append_synced(self._handle.fileno(), data)
        except OSError as exc:
            self._needs_newline = not ends_with_newline(self.path)  # if part of it stayed, start a new line
            raise SinkError(f"jsonl dead-letter sink: appending {len(data)} bytes of dead letters to {self.path} "
                            f"failed, so the page is not written: {write_failure(exc)}") from exc
        self._needs_newline = False

    def _sync(self) -> None:
        assert self._handle is not None
        os.fsync(self._handle.fileno())


@hookimpl
def etrmflow_dead_letter_types() -> list[type]:
    # Imported here: the sqlite sink imports this module for the dedupe key it shares.
    from etrmflow.builtins.dead_letters_sqlite import SqliteDeadLetterSink

    return [JsonlDeadLetterSink, SqliteDeadLetterSink]
