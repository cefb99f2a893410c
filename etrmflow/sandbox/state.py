"""The mutable side of a running sandbox: issued tokens, fault counters, statistics and
idempotency keys. One ``SandboxState`` per application; only its event loop touches it."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from etrmflow.sandbox.config import SandboxConfig
from etrmflow.sandbox.faults import FaultEngine, FaultRule

VALID, EXPIRED, UNKNOWN = "valid", "expired", "unknown"


class TokenStore:
    """Bearer tokens the token endpoint issued, each with its expiry on the injected clock."""

    def __init__(self, clock: Callable[[], float], ttl: float) -> None:
        self._clock = clock
        self._ttl = ttl
        self._expires: dict[str, float] = {}

    def issue(self) -> str:
        return self.register(secrets.token_urlsafe(24))

    def register(self, token: str) -> str:
        """Accept ``token`` as a bearer for ``ttl`` seconds from now."""
        self._expires[token] = self._clock() + self._ttl
        return token

    def status(self, token: str) -> str:
        """``valid``, ``expired`` (issued here, no longer good) or ``unknown``."""
        expires = self._expires.get(token)
        if expires is None:
            return UNKNOWN
        return VALID if self._clock() < expires else EXPIRED

    def expire_all(self) -> None:
        # Kept, not forgotten: a client presenting one learns it expired rather than that it
        # never existed, which is what tells it to ask for a new one.
        self._expires = dict.fromkeys(self._expires, float("-inf"))

    def clear(self) -> None:
        self._expires.clear()


@dataclass(slots=True)
class Stats:
    """Counters served by ``GET /_sandbox/stats``."""

    requests: Counter[str] = field(default_factory=Counter)
    data_requests: int = 0
    records_served: int = 0
    tokens_issued: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)
    instructions_accepted: int = 0
    """Instructions booked (each instruction of each POST that was not a replay)."""
    instructions_replayed: int = 0
    """Instructions of POSTs answered from the idempotency store: not booked again."""
    instructions_distinct: int = 0
    """Distinct instructions booked (by ``settlement_id``): below ``instructions_accepted``
    exactly when something was booked twice."""
    idempotency_conflicts: int = 0
    """POSTs refused with 422: a known Idempotency-Key with a different body."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "data_requests": self.data_requests,
            "records_served": self.records_served,
            "tokens_issued": self.tokens_issued,
            "faults_injected": dict(sorted(self.faults_injected.items())),
            "instructions_accepted": self.instructions_accepted,
            "instructions_replayed": self.instructions_replayed,
            "instructions_distinct": self.instructions_distinct,
            "idempotency_conflicts": self.idempotency_conflicts,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredAnswer:
    """What a POST with an ``Idempotency-Key`` answered, to replay it."""

    fingerprint: bytes
    body: dict[str, Any]


class SandboxState:
    """Everything a running sandbox remembers between requests."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Back to the config's rules, with no tokens, counters or idempotency keys."""
        self.tokens = TokenStore(self.config.clock, self.config.token_ttl)
        self.stats = Stats()
        self.faults = FaultEngine(self.config.faults)
        self.answers: dict[str, StoredAnswer] = {}
        self.instructions: dict[str, list[dict[str, Any]]] = {}
        """Every booking of every instruction, by instruction id (see ``sandbox.instructions``)."""

    def set_faults(self, rules: tuple[FaultRule, ...]) -> None:
        """Replace the rules; their counters start again from zero."""
        self.faults = FaultEngine(rules)


STATE_KEY: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)
