"""The circuit breaker state machine, on a fake clock."""

from __future__ import annotations

import pytest

from etrmflow.clock import FakeClock
from etrmflow.engine.breaker import BreakerBoard, BreakerState, CircuitOpen
from etrmflow.plan import BreakerPolicy


def board(**policy: object) -> tuple[BreakerBoard, FakeClock]:
    clock = FakeClock()
    return BreakerBoard(clock, BreakerPolicy(**policy)), clock  # type: ignore[arg-type]


def fail(breaker, times: int = 1) -> None:  # type: ignore[no-untyped-def]
    for _ in range(times):
        probe = breaker.before_request()
        breaker.record(False, probe=probe)


def test_opens_after_n_consecutive_failures_and_fails_fast() -> None:
    breakers, _ = board(failure_threshold=3, cooldown=30)
    breaker = breakers.for_endpoint("GET /trades")
    fail(breaker, 2)
    breaker.record(True, probe=breaker.before_request())  # a success resets the count
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen, match="circuit open for GET /trades: 3 failures in a row"):
        breaker.before_request()


def test_half_open_lets_exactly_one_probe_through_then_closes_on_success() -> None:
    breakers, clock = board(failure_threshold=2, cooldown=30)
    breaker = breakers.for_endpoint("GET /trades")
    fail(breaker, 2)
    clock.advance(29.9)
    with pytest.raises(CircuitOpen):
        breaker.before_request()
    clock.advance(0.2)
    assert breaker.before_request() is True  # the probe
    with pytest.raises(CircuitOpen, match="probe request is in flight"):
        breaker.before_request()
    breaker.record(True, probe=True)
    assert breaker.state is BreakerState.CLOSED
    assert [(t.from_state, t.to_state) for t in breakers.transitions] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_reopens_for_a_new_cooldown() -> None:
    breakers, clock = board(failure_threshold=1, cooldown=10)
    breaker = breakers.for_endpoint("GET /x")
    fail(breaker)
    clock.advance(10)
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    clock.advance(9)
    with pytest.raises(CircuitOpen):
        breaker.before_request()


def test_failure_ratio_over_a_window() -> None:
    breakers, _ = board(failure_threshold=100, failure_ratio=0.5, window=4)
    breaker = breakers.for_endpoint("GET /x")
    for success in (True, False, True, False):
        breaker.record(success, probe=breaker.before_request())
    assert breaker.state is BreakerState.CLOSED  # exactly 50 %: not above
    breaker.record(False, probe=breaker.before_request())  # window: F T F F -> 75 %
    assert breaker.state is BreakerState.OPEN


def test_endpoints_have_separate_breakers_and_disabled_never_opens() -> None:
    breakers, _ = board(failure_threshold=1)
    fail(breakers.for_endpoint("GET /a"))
    assert breakers.for_endpoint("GET /b").before_request() is False
    disabled, _ = board(failure_threshold=1, enabled=False)
    breaker = disabled.for_endpoint("GET /a")
    fail(breaker, 5)
    assert breaker.state is BreakerState.CLOSED
