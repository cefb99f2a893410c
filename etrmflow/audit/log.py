"""Appending to the audit log: one locked, fsynced write per page, chained to the last entry.

Single writer per append: an exclusive ``flock`` on the log file is held while the tail is read
and the new entries are written, so two etrmflow processes sharing a target folder still produce
one chain. (Where ``fcntl`` is missing, e.g. Windows, one writer per target folder is assumed.)
Within a process, a pipeline's worker thread is the only caller, so the event loop never waits
on an fsync.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from etrmflow import durable
from etrmflow.audit.chain import GENESIS, encode, seal, sha256_hex
from etrmflow.clock import utc_timestamp
from etrmflow.errors import EtrmflowError, write_failure

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

Event = tuple[str, dict[str, Any]]
"""An event name and its fields."""
_CHUNK = 8192


class AuditError(EtrmflowError):
    """The audit log cannot be appended to: the run stops rather than go on without evidence."""


class AuditLog:
    """The append-only, hash-chained audit log of a project (``target/audit/audit.jsonl``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, *, run_id: str, pipeline: str, events: Sequence[Event]) -> list[dict[str, Any]]:
        """Chain ``events`` to the last entry and write them durably; returns the written entries."""
        try:
            return self._append(run_id, pipeline, events)
        except OSError as exc:
            raise AuditError(f"cannot append to the audit log {self.path} (it is left as it was, and the run "
                             f"does not go on without its entries): {write_failure(exc)}") from exc

    def last(self) -> tuple[int, str] | None:
        """The seq and hash of the last entry (None for an empty or missing log): what a run
        records in run_results.json, so that entries cut from the end can be noticed."""
        try:
            with open(self.path, "rb") as handle, _locked(handle):
                seq, last_hash, _ = _tail(handle, self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"cannot read the audit log {self.path}: {exc}") from exc
        return (seq, last_hash) if seq else None

    def _append(self, run_id: str, pipeline: str, events: Sequence[Event]) -> list[dict[str, Any]]:
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not O_APPEND: the new entries are written over a cut line in place (see _write_over).
        with os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666), "r+b") as handle, _locked(handle):
            seq, prev, torn = _tail(handle, self.path)
            recovered = {"dropped_bytes": len(torn), "dropped_sha256": sha256_hex(torn)} if torn else None
            pending = ([("log_recovered", recovered)] if recovered else []) + list(events)
            entries = []
            for name, fields in pending:
                seq += 1
                entries.append(seal(seq=seq, ts=utc_timestamp(), run_id=run_id, pipeline=pipeline,
                                    event=name, fields=fields, prev=prev))
                prev = entries[-1]["hash"]
            data = b"".join(encode(entry) for entry in entries)  # before the file is touched
            _write_over(handle.fileno(), data, torn)
        if created:
            fsync_directory(self.path.parent)
        return entries


@contextlib.contextmanager
def _locked(handle: IO[bytes]) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_over(fd: int, data: bytes, torn: bytes) -> None:
    """Write ``data`` durably over the cut line ``torn`` at the end of the file, or leave the
    file byte for byte as it was, cut line included, so that the next append still reports it.

    In place, not cut off first: on a failure (a full disk, a file size limit) only the bytes
    that were overwritten are put back, and those were just written there, so putting them back
    needs no room the disk or the limit may no longer give; what went past the old end is cut
    off again. Unbuffered, so that nothing left in a buffer is written later."""
    size = os.lseek(fd, 0, os.SEEK_END)
    start = size - len(torn)
    written, shortened = 0, False
    try:
        while written < len(data):
            written += os.pwrite(fd, data[written:], start + written)
        if start + len(data) < size:
            os.ftruncate(fd, start + len(data))  # the rest of a cut line longer than the entries
            shortened = True
        os.fsync(fd)
    except BaseException:  # an interrupt too: never leave part of an append behind
        with contextlib.suppress(OSError):
            _restore(fd, torn if shortened else torn[:written], start, size)
        raise


def _restore(fd: int, overwritten: bytes, start: int, size: int) -> None:
    done = 0
    while done < len(overwritten):
        done += os.pwrite(fd, overwritten[done:], start + done)
    os.ftruncate(fd, size)
    os.fsync(fd)


def _tail(handle: IO[bytes], path: Path) -> tuple[int, str, bytes]:
    """The last entry's seq and hash, and the torn last line (a crash mid-append), if any.

    The torn bytes were never a complete entry (the append that wrote them did not return), so
    the next append writes over them (a reader only skips them), and its first entry,
    ``log_recovered``, records their size and hash.
    """
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return 0, GENESIS, b""
    end, text = _last_line(handle, size)
    torn = b""
    if not text.endswith(b"\n"):
        torn = text
        if end == 0:
            return 0, GENESIS, torn
        _, text = _last_line(handle, end)
    try:
        last = orjson.loads(text)
        return int(last["seq"]), str(last["hash"]), torn
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise AuditError(f"the last entry of the audit log {path} is unreadable, so nothing can be chained "
                         f"to it; run `etrmflow audit verify --log {path}`") from None


def _last_line(handle: IO[bytes], size: int) -> tuple[int, bytes]:
    """(offset where the last line starts, the last line) of the first ``size`` bytes."""
    start, data = size, b""
    while start > 0:
        step = min(_CHUNK, start)
        start -= step
        handle.seek(start)
        data = handle.read(step) + data
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut >= 0:
            return start + cut + 1, data[cut + 1:]
    return 0, data


def fsync_directory(folder: Path) -> None:
    """Make the new file's directory entry durable too, as far as the system lets: the entries
    themselves are synced already, so a failure here must not report them as not written."""
    with contextlib.suppress(OSError):
        durable.fsync_directory(folder)
