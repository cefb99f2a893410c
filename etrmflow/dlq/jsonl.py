"""The store of the ``jsonl`` dead-letter sink: read the file, append resolution lines.

The file is append-only, and so is this store: a resolution is a new line naming the letter it
resolves, never an edit of the letter (the file is the audit trail of what was quarantined).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from etrmflow.builtins.dead_letters import (
    append_synced,
    ends_with_newline,
    jsonl_path,
    pipeline_tag,
    read_entries,
)
from etrmflow.components import SinkContext
from etrmflow.dlq.model import LetterStatus, Resolution, StoredLetter
from etrmflow.errors import SinkError
from etrmflow.plan import ComponentPlan

log = logging.getLogger("etrmflow.dead_letter")

_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


class JsonlDeadLetterStore:
    """The dead letters of a ``jsonl`` dead-letter file and their resolutions: those of
    ``pipeline`` when it is given (pipelines may share a file), and lines naming no pipeline."""

    def __init__(self, path: Path, display: str, pipeline: str | None = None,
                 tag: dict[str, str] | None = None) -> None:
        self.path = path
        self.display = display
        self.pipeline = pipeline
        self.tag = tag or {}
        """Added to each resolution line, as the sink adds it to each letter."""

    @classmethod
    def from_plan(cls, component: ComponentPlan, context: SinkContext) -> JsonlDeadLetterStore:
        path = jsonl_path(component.options, context)
        try:
            display = os.path.relpath(path, context.project_dir)
        except ValueError:  # another drive on Windows
            display = str(path)
        return cls(path, display, context.pipeline, pipeline_tag(component.options, context))

    def describe(self) -> str:
        return f"jsonl {self.display}"

    def letters(self) -> list[StoredLetter]:
        letters: list[StoredLetter] = []
        open_at: dict[bytes, int] = {}
        for entry in read_entries(self.path):
            if not entry.of(self.pipeline):  # another pipeline's letter, or its resolution
                continue
            if entry.resolves:
                index = open_at.pop(entry.key, None)
                if index is None:
                    log.warning("%s:%d: a resolution of no open letter; ignored", self.path, entry.line)
                else:
                    letters[index] = letters[index].resolved(entry.data)
            elif entry.key not in open_at:  # a duplicate open letter is the same letter
                open_at[entry.key] = len(letters)
                letters.append(StoredLetter(data=entry.data, key=entry.key.hex()))
        return letters

    def resolve(self, resolutions: Sequence[Resolution]) -> int:
        still_open = {letter.key for letter in self.letters() if letter.status is LetterStatus.OPEN}
        lines = []
        for resolution in resolutions:
            if resolution.dedupe_key in still_open:
                still_open.discard(resolution.dedupe_key)
                lines.append(orjson.dumps(resolution.as_dict() | self.tag, option=_JSON_OPTIONS))
        if lines:
            self._append(b"".join(lines))
        return len(lines)

    def _append(self, data: bytes) -> None:
        prefix = b"" if ends_with_newline(self.path) else b"\n"  # never glue to a cut line
        try:
            with self.path.open("ab", buffering=0) as handle:
                append_synced(handle.fileno(), prefix + data)
        except OSError as exc:
            raise SinkError(f"jsonl dead-letter store: appending resolutions to {self.path} "
                            f"failed: {exc}") from exc
