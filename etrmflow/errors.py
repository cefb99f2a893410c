"""The exception tree and the exit codes: the one place that decides policy.

The class of an exception decides what the engine does with it::

    EtrmflowError
    ├── ConfigError            bad project files; nothing is fetched          -> exit 2
    │     (carries every ConfigIssue found, each with file:line:col)
    ├── SecretMissing          a secret() the run needs is not set            -> exit 2
    ├── FetchError             a request failed for good                      -> exit 1
    │   ├── RetriableFetchError    429/5xx/timeouts/dropped connections: tenacity retries it
    │   ├── RetriesExhausted       a retriable failure that outlasted the retry policy
    │   ├── FatalFetchError        4xx, malformed body, token refused: not retried
    │   │   └── AuthError          the vendor refused our credentials
    │   │       └── CredentialsRejected  the token endpoint said invalid_client etc.  -> exit 2
    │   └── PaginationError        a walk that loops, never stops or ends short
    ├── TransformError         a transform step failed on the data            -> exit 1
    ├── SinkError              a write failed; the batch was rolled back      -> exit 1
    ├── StorageError           a file of the run cannot be written (full)     -> exit 1
    └── RunFailed              the run finished but breached a policy          -> exit 1

A malformed record is not an exception: it becomes a violation row for the dead-letter sink.
Anything else escaping the engine is a bug -> exit 3 with a crash log.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass, field


class ExitCode(enum.IntEnum):
    """Process exit codes of the ``etrmflow`` command (documented in ``--help`` and docs/cli.md)."""

    OK = 0
    """Everything ran; invalid records (if any) were quarantined within policy."""
    RUN_FAILED = 1
    """A fetch or write failed for good, or a quarantine threshold was breached."""
    CONFIG_ERROR = 2
    """The project files are invalid or a secret is missing; nothing was fetched."""
    INTERNAL_ERROR = 3
    """A bug in etrmflow or a plugin; a crash log was written."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C / SIGINT."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """Where in the project a value came from (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigIssue:
    """One problem in the project files, reported compiler style."""

    location: Location
    key_path: str
    message: str
    hint: str = ""
    excerpt: str = ""

    def __str__(self) -> str:
        where = f"{self.location}: {self.key_path}: " if self.key_path else f"{self.location}: "
        text = where + self.message
        if self.hint:
            text += f" ({self.hint})"
        if self.excerpt:
            text += "\n" + self.excerpt
        return text

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location
        return (loc.file, loc.line, loc.column, self.key_path)


class EtrmflowError(Exception):
    """Base of every error etrmflow raises on purpose."""

    exit_code: ExitCode = ExitCode.RUN_FAILED


class ConfigError(EtrmflowError):
    """The project files are invalid. Holds every issue found, not only the first."""

    exit_code = ExitCode.CONFIG_ERROR

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue) -> None:
        # A connector shared by several pipelines would otherwise report its problem once each.
        unique = list(dict.fromkeys(issues if isinstance(issues, list) else [issues]))
        self.issues: list[ConfigIssue] = sorted(unique, key=ConfigIssue.sort_key)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class SecretMissing(ConfigError):
    """A ``secret(NAME)`` that a request needs is not set in the environment."""


class FetchError(EtrmflowError):
    """A request to a vendor failed. ``url`` never holds a secret (it is redacted)."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class RetriableFetchError(FetchError):
    """A failure worth another attempt: throttling, 5xx, timeouts, dropped connections."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, url=url, status=status)
        self.retry_after = retry_after


class RetriesExhausted(FetchError):
    """A retriable failure persisted through every attempt the retry policy allows."""


class FatalFetchError(FetchError):
    """A failure that another attempt will not fix (4xx, malformed body)."""


class AuthError(FatalFetchError):
    """The vendor refused our credentials, or the token endpoint said no."""


class CredentialsRejected(AuthError):
    """The token endpoint refused the configured credentials (invalid_client, invalid_grant...).

    A configuration problem, not a vendor outage: exit 2, and never retried.
    """

    exit_code = ExitCode.CONFIG_ERROR


class PaginationError(FatalFetchError):
    """A page walk that would silently lose or repeat data: a loop, no end, a short page."""


class TransformError(EtrmflowError):
    """A transform step raised on a batch (e.g. a column it needs is missing)."""


class SinkError(EtrmflowError):
    """A sink could not write a batch; the batch was rolled back."""


class RunFailed(EtrmflowError):
    """The run completed but a policy (e.g. a quarantine threshold) says it failed."""


class StorageError(EtrmflowError):
    """A file etrmflow writes for the run could not be written: a full disk, a file size or
    quota limit, a read-only folder, a file or folder in the way. Not a bug: the message says
    which file, what the system said and how to go on."""


RESUME_HINT = ("`etrmflow run --resume` continues from the last page the run recorded, fetching the pages "
               "after it again")
"""How a pipeline stopped by a failed write goes on: nothing after that page counted as done."""

_FULL = ("the disk is full", "free space on it")
_FOLDER_IN_THE_WAY = ("a folder is in the way of the file", "move the folder away")
_FILE_IN_THE_WAY = ("a file is in the way of a folder on the path", "move the file away")
_NO_PERMISSION = ("no permission to write there", "give the account that runs etrmflow write access")
_OS_PROBLEMS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: ("the disk quota is used up", "free space or raise the quota"),
    errno.EFBIG: (("disk full for this file: it reached the largest size that a file size limit (ulimit -f) "
                   "or the file system allows"), "raise the limit or free space"),
    errno.EROFS: ("the file system is read-only", "mount it writable or choose another path"),
    errno.EACCES: _NO_PERMISSION,
    errno.EPERM: _NO_PERMISSION,
    errno.EISDIR: _FOLDER_IN_THE_WAY,
    errno.ENOTDIR: _FILE_IN_THE_WAY,
    errno.EEXIST: _FILE_IN_THE_WAY,
}
_SQLITE_PROBLEMS: dict[str, tuple[str, str]] = {  # by sqlite3.Error.sqlite_errorname prefix
    "SQLITE_FULL": _FULL,
    "SQLITE_IOERR": ("a write to the disk failed: a full disk, a file size limit or a failing device",
                     "free space, raise the limit or check the device"),
    "SQLITE_CANTOPEN": (("the database file cannot be created or opened there: a folder in the way, or no "
                         "permission"), "move what is in the way or give write access"),
    "SQLITE_READONLY": ("the database is read-only", "give write access to the file and its folder"),
}


def disk_problem(exc: BaseException) -> tuple[str, str] | None:
    """(what it means, what to do) when the disk or the path made a write fail: full, a size
    or quota limit, read-only, no permission, something in the way; None for anything else.
    Takes an OSError, or an ``sqlite3.Error`` (SQLite reports a full disk itself)."""
    code = getattr(exc, "errno", None) or -1
    if code == errno.EEXIST and _is_folder(getattr(exc, "filename", None)):
        return None  # a folder made again without exist_ok: a bug, not a file in the way
    found = _OS_PROBLEMS.get(code)
    if found is not None:
        return found
    name = str(getattr(exc, "sqlite_errorname", ""))
    return next((text for prefix, text in _SQLITE_PROBLEMS.items() if name.startswith(prefix)), None)


def _is_folder(name: object) -> bool:
    try:
        return isinstance(name, (str, bytes, os.PathLike)) and os.path.isdir(name)
    except (OSError, ValueError):
        return False


def write_failure(exc: BaseException, then: str = RESUME_HINT) -> str:
    """The system's words for a failed write and, when the disk or the path is the cause, what
    that means, what to do and what ``then`` goes on: "[Errno 28] No space left on device: '...'
    (the disk is full); free space on it, then `etrmflow run --resume` continues ..."."""
    said = str(exc) or type(exc).__name__
    problem = disk_problem(exc)
    if problem is None:
        return said
    meaning, fix = problem
    return f"{said} ({meaning}); {fix}, then {then}"


@dataclass(slots=True)
class IssueCollector:
    """Collects config issues so that every problem is reported at once."""

    issues: list[ConfigIssue] = field(default_factory=list)

    def add(self, location: Location, key_path: str, message: str, hint: str = "") -> None:
        self.issues.append(ConfigIssue(location=location, key_path=key_path, message=message, hint=hint))

    def extend(self, issues: list[ConfigIssue]) -> None:
        self.issues.extend(issues)

    def raise_if_any(self) -> None:
        if self.issues:
            raise ConfigError(self.issues)
