"""Circuit breaker per endpoint, shared by every concurrent request of a run.

closed --N consecutive failures (or failure ratio over a window)--> open
open   --cooldown elapsed--> half-open: exactly one probe goes through, others fail fast
half-open --probe succeeds--> closed;  --probe fails--> open again

While open, requests fail fast with ``CircuitOpen`` without calling the vendor.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, field

from etrmflow.clock import Clock
from etrmflow.errors import FatalFetchError
from etrmflow.plan import BreakerPolicy

log = logging.getLogger("etrmflow.breaker")


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(FatalFetchError):
    """The endpoint's breaker is open: the request was not sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    endpoint: str
    from_state: str
    to_state: str
    at: float
    reason: str


@dataclass(slots=True)
class CircuitBreaker:
    endpoint: str
    policy: BreakerPolicy
    clock: Clock
    transitions: list[Transition]
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False
    outcomes: deque[bool] = field(default_factory=deque)

    def before_request(self) -> bool:
        """Raise CircuitOpen, or allow the request; True when it is the half-open probe."""
        if not self.policy.enabled or self.state is BreakerState.CLOSED:
            return False
        if self.state is BreakerState.OPEN:
            waited = self.clock.monotonic() - self.opened_at
            if waited < self.policy.cooldown:
                raise CircuitOpen(f"circuit open for {self.endpoint}: {self.consecutive_failures} failures in a row; "
                                  f"not calling the vendor for another {self.policy.cooldown - waited:.0f}s")
            self._move(BreakerState.HALF_OPEN, "cooldown elapsed")
        if self.probe_in_flight:
            raise CircuitOpen(f"circuit half-open for {self.endpoint}: a probe request is in flight")
        self.probe_in_flight = True
        return True

    def release(self, *, probe: bool) -> None:
        """An outcome that says nothing about the endpoint's health (the vendor throttled the
        request): free the probe slot, leave the state and the failure count as they are."""
        if probe:
            self.probe_in_flight = False

    def record(self, success: bool, *, probe: bool) -> None:
        if probe:
            self.probe_in_flight = False
        self.outcomes.append(success)
        while len(self.outcomes) > self.policy.window:
            self.outcomes.popleft()
        if success:
            self.consecutive_failures = 0
            if self.state is not BreakerState.CLOSED:
                self._move(BreakerState.CLOSED, "probe succeeded")
            return
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._open("probe failed")
        elif self.state is BreakerState.CLOSED and self._tripped():
            self._open(f"{self.consecutive_failures} consecutive failures" if self._by_count()
                       else f"failure ratio above {self.policy.failure_ratio:.0%}")

    def _by_count(self) -> bool:
        return self.consecutive_failures >= self.policy.failure_threshold

    def _tripped(self) -> bool:
        if not self.policy.enabled:
            return False
        if self._by_count():
            return True
        ratio = self.policy.failure_ratio
        if ratio is None or len(self.outcomes) < self.policy.window:
            return False
        return self.outcomes.count(False) / len(self.outcomes) > ratio

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock.monotonic()
        self._move(BreakerState.OPEN, reason)

    def _move(self, to: BreakerState, reason: str) -> None:
        transition = Transition(endpoint=self.endpoint, from_state=self.state.value, to_state=to.value,
                                at=self.clock.monotonic(), reason=reason)
        self.transitions.append(transition)
        log.warning("circuit breaker for %s: %s -> %s (%s)", self.endpoint, self.state.value, to.value, reason)
        self.state = to


class BreakerBoard:
    """One breaker per endpoint (method and URL without its query), created on first use."""

    def __init__(self, clock: Clock, policy: BreakerPolicy | None = None) -> None:
        self.clock = clock
        self.policy = policy or BreakerPolicy()
        self.transitions: list[Transition] = []
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_endpoint(self, endpoint: str, policy: BreakerPolicy | None = None) -> CircuitBreaker:
        """The endpoint's breaker; the policy of its first user applies."""
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = CircuitBreaker(endpoint=endpoint, policy=policy or self.policy, clock=self.clock,
                                     transitions=self.transitions)
            self._breakers[endpoint] = breaker
        return breaker
