"""Secret values: resolved at the last moment, and scrubbed from everything we print or write.

Every secret value resolved in this process is remembered by the redactor, and every log line,
error message and artifact text passes through ``redact``. URL query parameters whose names
look like credentials are masked too, whatever their value.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from etrmflow.templating import SECRET_MARKER

MASK = "***"
SENSITIVE_PARAMS = frozenset({
    "api_key", "apikey", "key", "token", "access_token", "id_token", "refresh_token",
    "client_secret", "password", "secret", "signature", "sig", "subscription-key",
    "subscription_key", "code",
})
_MIN_SECRET_LENGTH = 4  # masking "a" or "1" everywhere would mangle every log line
_MIN_ENCODED_LENGTH = 8  # 48 bits of a secret's Base64: never met by chance
_URLSAFE = str.maketrans("+/", "-_")


class Redactor:
    """Remembers secret values and masks them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._escaped: re.Pattern[str] | None = None
        self._needles: tuple[bytes, ...] = ()
        self._slashed = False
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Remember a secret value, and its Base64 spellings: an ``Authorization: Basic`` header
        (``base64(user:password)``) echoed by a vendor holds the password only that way."""
        if len(value) < _MIN_SECRET_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            self._values.update(base64_spellings(value))
            self._rebuild()

    @contextlib.contextmanager
    def scoped(self) -> Iterator[None]:
        """Secrets added inside are forgotten at the end: the test kit runs many projects in one
        process, and one test's secret (a short one, say) must not mask another test's data."""
        before = set(self._values)
        try:
            yield
        finally:
            with self._lock:
                self._values = before
                self._rebuild()

    def _rebuild(self) -> None:
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None
        self._escaped = re.compile("|".join(_spelled_anyhow(v) for v in ordered)) if ordered else None
        self._needles = tuple({needle for v in ordered for needle in _spellings(v)})
        self._slashed = any("/" in v for v in ordered)

    def redact(self, text: str) -> str:
        """``text`` with every secret masked, whether spelled as is or escaped (only a text with a
        backslash can hold an escape: the others take the ~10x faster pattern of the values)."""
        pattern = self._escaped if "\\" in text else self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def found_in(self, data: bytes) -> bool:
        """Whether JSON bytes (a response body, records) hold a secret value, as is or escaped.

        ``in`` on bytes: ~0.07 ms a spelling for a page of 1,000 trades, ~0.3 ms for a secret with
        its Base64 spellings (orjson reads the page in ~1 ms)."""
        return any(needle in data for needle in self._needles)

    def in_body(self, body: bytes) -> bool | None:
        """``found_in`` for a vendor's raw body; None when the body has ``\\u`` escapes, which
        may spell any character of a secret: then only the decoded records can tell."""
        if not self._needles:
            return False
        if self.found_in(body):
            return True
        # memchr for the backslash first: ~100x faster than looking for the two bytes. A slash
        # escaped in one place and not another (JSON allows both) matches no spelling either.
        if b"\\" not in body:
            return False
        return None if b"\\u" in body or (self._slashed and b"\\/" in body) else False

    def masked(self, value: Any) -> Any:
        """A copy of a decoded JSON value with every secret masked in its strings and keys, and
        a number that spells one (a numeric API key echoed as a number) replaced by the mask."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return MASK if self.redact(repr(value)) != repr(value) else value
        if isinstance(value, dict):
            return {self.masked(key): self.masked(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.masked(item) for item in value]
        return value


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "'": "\\'", "\b": "\\b", "\f": "\\f",
                  "\n": "\\n", "\r": "\\r", "\t": "\\t"}
"""The backslash escapes of JSON (and of Python's repr, for the quote) a text may spell a character with."""


def _spelled_anyhow(value: str) -> str:
    """A pattern for ``value`` with each character as is or escaped the way JSON or a repr may
    write it (``\\"``, ``\\/``, ``\\u00e9`` in either case, a surrogate pair, ``\\x01``): a kept
    body, a vendor's error text or a validator's message holds the value in any of these."""
    return "".join(_character(c) for c in value)


def _character(c: str) -> str:
    code = ord(c)
    units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)]
    spelled = [re.escape(c), "".join(rf"\\u{_hex(unit, 4)}" for unit in units)]
    if c in _SHORT_ESCAPES:
        spelled.append(re.escape(_SHORT_ESCAPES[c]))
    if not c.isprintable():
        spelled.append(rf"\\x{_hex(code, 2)}" if code < 0x100 else rf"\\U{_hex(code, 8)}")
    return "(?:" + "|".join(spelled) + ")"


def base64_spellings(value: str) -> set[str]:
    """The Base64 text that spells ``value`` wherever it sits in encoded bytes: for each of the
    three byte alignments, the characters made of the value's bits only (the first and last may
    mix in neighbouring bytes), standard and URL-safe. Shorter than 8 characters: none."""
    data, found = value.encode(), set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode("ascii")
        core = encoded[-(-shift * 8 // 6):(shift + len(data)) * 8 // 6]
        if len(core) >= _MIN_ENCODED_LENGTH:
            found |= {core, core.translate(_URLSAFE)}
    return found


def _hex(code: int, width: int) -> str:
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{code:0{width}x}")


def _spellings(value: str) -> set[bytes]:
    """The ways a JSON text may spell ``value``: raw, escaped as orjson and as the stdlib do,
    and with ``/`` escaped as ``\\/`` (which JSON allows and some servers write)."""
    escaped = (json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1])
    return {value.encode()} | {spelling.encode() for text in escaped for spelling in (text, text.replace("/", "\\/"))}


REDACTOR = Redactor()
"""Process-wide on purpose: a secret resolved anywhere must be masked everywhere."""


def redact(text: str) -> str:
    return REDACTOR.redact(text)


def redact_url(url: str) -> str:
    """The URL with credential-like query parameters and known secret values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.query:
        pairs = [(k, MASK if k.lower() in SENSITIVE_PARAMS else v)
                 for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(pairs, safe="*"))
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", f":{MASK}@"))
    return redact(urlunsplit(parts))


class SecretStore:
    """Resolves ``${secret:NAME}`` markers from the environment (then declared defaults)."""

    def __init__(self, environ: Mapping[str, str] | None = None,
                 defaults: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.defaults = dict(defaults or {})
        self._declared: set[str] | None = None
        for value in self.defaults.values():
            REDACTOR.add(value)

    def declare(self, names: Iterable[str]) -> None:
        """Resolve only these names (with any declared before): the secrets the configuration
        uses. A marker in what a vendor sent (a cursor or next link spelling
        ``${secret:AWS_SECRET_ACCESS_KEY}``) then stays text, never any variable's value."""
        self._declared = (self._declared or set()) | set(names)

    def missing(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in set(names) if n not in self.environ and n not in self.defaults)

    def value(self, name: str) -> str:
        value = self.environ.get(name)
        if value is None:
            value = self.defaults.get(name)
        if value is None:
            raise KeyError(name)
        REDACTOR.add(value)
        return value

    def resolve(self, text: str) -> str:
        if "${secret:" not in text:
            return text
        return SECRET_MARKER.sub(self._substitute, text)

    def _substitute(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if self._declared is not None and name not in self._declared:
            return match.group(0)
        return self.value(name)


def secret_names(value: object) -> set[str]:
    """Names of every secret marker inside a nested structure."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(SECRET_MARKER.findall(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            found |= secret_names(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= secret_names(item)
    return found


class RedactingFilter(logging.Filter):
    """Masks secrets in every record passing through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True
