"""Raw response bodies kept by content address (``target/bodies/sha256/<ab>/<hex>``), so the
page an audit entry describes can be reproduced byte for byte.

Each body is written once, durably and atomically (a temporary file, fsynced, then renamed
into place): identical bodies are stored once, and a crash never leaves a half-written body
under a real name. Files are made read-only.

Bodies are the vendor's bytes, kept verbatim. A vendor may echo our credentials in them (a
``self`` link carrying the ``api_key`` of the query): a body that contains a secret value the
run resolved is kept with the value masked instead (``***``), under the hash of the masked
bytes, and its audit entry says ``body_kept: redacted``. Secrets never reach the disk; that
one body is then not byte-identical to what the vendor sent, and the entry says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from etrmflow.audit.chain import sha256_hex
from etrmflow.audit.log import AuditError, fsync_directory
from etrmflow.errors import write_failure
from etrmflow.secrets import redact

BODIES = "bodies"
"""Where kept bodies live, relative to the project's target folder."""
ALGORITHM = "sha256"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Kept:
    """How a page's body was kept: its audit entry's ``body_kept`` and ``kept_sha256``."""

    how: str
    """``verbatim``, or ``redacted`` when a secret value in it was masked."""
    sha256: str


def masked(body: bytes) -> bytes:
    """The body with every secret value the process resolved masked; the same bytes if none.

    Decoded with ``surrogateescape`` so that any bytes, UTF-8 or not, come back unchanged.
    """
    text = body.decode("utf-8", "surrogateescape")
    cleaned = redact(text)
    return body if cleaned == text else cleaned.encode("utf-8", "surrogateescape")


class BodyStore:
    """The content-addressed folder of kept bodies (``<target>/bodies``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / ALGORITHM / sha256[:2] / sha256

    def keep(self, body: bytes, sha256: str) -> Kept:
        """Store ``body`` (whose SHA-256 is ``sha256``), masked if it holds a secret."""
        cleaned = masked(body)
        if cleaned is not body:
            kept = Kept(how="redacted", sha256=sha256_hex(cleaned))
        else:
            kept = Kept(how="verbatim", sha256=sha256)
        path = self.path(kept.sha256)
        try:
            self._write_once(path, cleaned)
        except OSError as exc:  # before the page is processed: it is not written, and fetched again
            raise AuditError(f"cannot keep the response body in {self.root}: writing {path} ({len(cleaned)} "
                             f"bytes) failed: {write_failure(exc)}") from exc
        return kept

    def _write_once(self, path: Path, data: bytes) -> None:
        if path.exists():  # content-addressed: the same name is the same bytes
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o444)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        fsync_directory(path.parent)

    def find(self, prefix: str) -> list[Path]:
        """Kept bodies whose hash starts with ``prefix`` (at least two hex digits)."""
        folder = self.root / ALGORITHM / prefix[:2]
        if len(prefix) < 2 or not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and not p.name.startswith("."))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (bodies can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
