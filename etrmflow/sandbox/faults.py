"""Fault injection for the sandbox vendor: which data request fails, and how.

A rule is written compactly as ``KIND[:key=value,...]`` (``--fault``, ``fault=`` in a
``sandbox://`` URL, ``POST /_sandbox/faults``) or as a JSON object with the same keys plus
``kind``::

    503:every=4                       every 4th data request answers 503
    429:at=3+7,retry_after=2          requests 3 and 7 answer 429 with Retry-After: 2
    drop:every=10,burst=2,times=4     requests 10, 11, 20, 21 lose their connection, then no more
    slow:delay=0.2,path=/api/v2/settlements*
    accept-503:at=1                   request 1 is served (a POST is booked), then answered 503

Each rule counts, in order, the data requests whose path it matches (``path`` is an fnmatch
glob; the token and admin routes are never data requests). A rule fires on its triggers
(``every``, ``at``; without either, on every request it matches) and then on the ``burst - 1``
requests after each trigger, until it has fired ``times`` times. When several rules fire on one
request, the first listed answers it and the others have used their turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

FAULT_KINDS: tuple[str, ...] = (
    "429", "429-date", "429-bare", "503", "502", "slow", "drop", "expire-tokens", "malformed", "error-body",
    "accept-503", "accept-drop",
)
"""``accept-*`` serve the request, then lose the answer: the client cannot tell whether it was applied."""
SELECTION_KEYS: tuple[str, ...] = ("every", "at", "burst", "path", "times")
# Keys that only make sense for some kinds.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "retry_after": ("429", "429-date", "503", "502", "accept-503"),
    "delay": ("slow",),
}
DEFAULT_RETRY_AFTER = 1.0
DEFAULT_DELAY = 1.0
_DEFAULTS: dict[str, Any] = {"every": None, "at": (), "burst": 1, "path": None, "times": None,
                             "retry_after": None, "delay": None}


def _valid_keys_text() -> str:
    kind_keys = [f"{key} ({', '.join(kinds)})" for key, kinds in KIND_KEYS.items()]
    return ", ".join([*SELECTION_KEYS, *kind_keys])


class _SpecError(ValueError):
    """A problem in one part of a spec; ``FaultRule`` prefixes it with the whole spec."""


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _SpecError(f"{key} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise _SpecError(f"{key} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise _SpecError(f"{key} must be a positive integer, got {value!r}")
    return number


def _seconds(key: str, value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        number = -1.0
    if not number >= 0:  # also rejects NaN
        raise _SpecError(f"{key} must be a number of seconds >= 0, got {value!r}")
    return number


def _request_numbers(value: Any) -> tuple[int, ...]:
    # "3+7" in a URL query decodes to "3 7": accept both.
    parts = value.replace("+", " ").split() if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or not parts:
        raise _SpecError(f"at must be request numbers joined by '+' (e.g. at=3+7), got {value!r}")
    return tuple(sorted({_positive_int("at", part) for part in parts}))


def _glob(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _SpecError(f"path must be a glob starting with '/', e.g. /api/v2/trades*, got {value!r}")
    return value


_CONVERTERS = {
    "every": lambda v: _positive_int("every", v),
    "burst": lambda v: _positive_int("burst", v),
    "times": lambda v: _positive_int("times", v),
    "at": _request_numbers,
    "path": _glob,
    "retry_after": lambda v: _seconds("retry_after", v),
    "delay": lambda v: _seconds("delay", v),
}


def _convert(kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    if kind not in FAULT_KINDS:
        raise _SpecError(f"unknown kind {kind!r}; valid kinds: {', '.join(FAULT_KINDS)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _CONVERTERS:
            raise _SpecError(f"unknown key {key!r}; valid keys: {_valid_keys_text()}")
        if key in KIND_KEYS and kind not in KIND_KEYS[key]:
            raise _SpecError(f"key {key!r} only applies to kind {', '.join(KIND_KEYS[key])}")
        values[key] = _CONVERTERS[key](value)
    return values


def _split_spec(spec: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = spec.strip().partition(":")
    raw: dict[str, str] = {}
    for part in filter(None, (piece.strip() for piece in rest.split(","))):
        key, equals, value = part.partition("=")
        if not equals or not key.strip():
            raise _SpecError(f"{part!r} is not key=value; write KIND[:key=value,...], e.g. 503:every=4")
        raw[key.strip()] = value.strip()
    return kind.strip(), raw


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """One fault the sandbox injects into its data routes (see the module docstring)."""

    kind: str
    every: int | None = None
    at: tuple[int, ...] = ()
    burst: int = 1
    path: str | None = None
    times: int | None = None
    retry_after: float | None = None
    """Seconds for ``Retry-After`` (429 and 429-date default to 1; 502/503 send it only if set)."""
    delay: float | None = None
    """Seconds a ``slow`` answer waits (default 1)."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; valid kinds: {', '.join(FAULT_KINDS)}")

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """A rule from ``KIND[:key=value,...]``; ValueError names the bad part."""
        try:
            kind, raw = _split_spec(spec)
            return cls(kind=kind, **_convert(kind, raw))
        except _SpecError as error:
            raise ValueError(f"bad fault spec {spec!r}: {error}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """A rule from a JSON object: ``{"kind": "503", "every": 4}``."""
        try:
            raw = dict(data)
            kind = raw.pop("kind", None)
            if not isinstance(kind, str):
                raise _SpecError(f"needs a 'kind', one of: {', '.join(FAULT_KINDS)}")
            return cls(kind=kind, **_convert(kind, raw))
        except _SpecError as error:
            raise ValueError(f"bad fault spec {dict(data)!r}: {error}") from None

    @classmethod
    def coerce(cls, value: str | Mapping[str, Any] | FaultRule) -> FaultRule:
        if isinstance(value, FaultRule):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ValueError(f"bad fault spec {value!r}: expected 'KIND[:key=value,...]' or an object")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        for key in (*SELECTION_KEYS, *KIND_KEYS):
            value = getattr(self, key)
            if value != _DEFAULTS[key]:
                data[key] = list(value) if key == "at" else value
        return data

    def spec(self) -> str:
        """The compact form, e.g. ``429:at=3+7,retry_after=2``."""
        parts = [f"{key}={'+'.join(map(str, value)) if key == 'at' else value}"
                 for key, value in self.to_dict().items() if key != "kind"]
        return self.kind + (":" + ",".join(parts) if parts else "")

    def matches(self, path: str) -> bool:
        return self.path is None or fnmatchcase(path, self.path)

    def triggers(self, number: int) -> bool:
        """Whether the ``number``-th matching request (1-based) starts a burst."""
        if self.every is None and not self.at:
            return True
        return (self.every is not None and number % self.every == 0) or number in self.at

    @property
    def retry_after_seconds(self) -> float | None:
        if self.retry_after is None and self.kind in ("429", "429-date"):
            return DEFAULT_RETRY_AFTER
        return self.retry_after

    @property
    def delay_seconds(self) -> float:
        return DEFAULT_DELAY if self.delay is None else self.delay


def parse_faults(specs: Iterable[str | Mapping[str, Any] | FaultRule]) -> tuple[FaultRule, ...]:
    return tuple(FaultRule.coerce(spec) for spec in specs)


@dataclass(slots=True)
class _RuleState:
    seen: int = 0
    burst_left: int = 0
    injected: int = 0


@dataclass(slots=True)
class FaultEngine:
    """Decides, request by request, which rule (if any) answers. Deterministic in request order."""

    rules: tuple[FaultRule, ...] = ()
    _states: list[_RuleState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._states = [_RuleState() for _ in self.rules]

    def pick(self, path: str) -> FaultRule | None:
        """Count one data request to ``path``; return the rule that answers it, or None."""
        chosen: FaultRule | None = None
        for rule, state in zip(self.rules, self._states):
            if rule.matches(path) and _fires(rule, state) and chosen is None:
                chosen = rule
        return chosen


def _fires(rule: FaultRule, state: _RuleState) -> bool:
    state.seen += 1
    if rule.times is not None and state.injected >= rule.times:
        return False
    if state.burst_left > 0:  # a trigger inside a burst does not extend it
        state.burst_left -= 1
    elif rule.triggers(state.seen):
        state.burst_left = rule.burst - 1
    else:
        return False
    state.injected += 1
    return True
