"""Retry policy: Retry-After parsing, backoff bounds, the Retry-After cap, and the Retrier on a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etrmflow.clock import FakeClock
from etrmflow.engine.retry import (
    Retrier,
    backoff_delay,
    check_retry_after,
    parse_retry_after,
)
from etrmflow.errors import FatalFetchError, RetriableFetchError, RetriesExhausted
from etrmflow.plan import RetryPolicy

CLOCK = FakeClock()
NOW = CLOCK.now()
EXACT = RetryPolicy(initial=0.5, max=4.0, multiplier=2.0, jitter="none", max_attempts=4, retry_after_max=10)


# --- parse_retry_after -------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    ("5", 5.0), ("0", 0.0), (" 120 ", 120.0), ("0.5", 0.5), ("2.25", 2.25),
    (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
    (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),  # already past: go now
    ((NOW + timedelta(seconds=7)).strftime("%a, %d %b %Y %H:%M:%S -0000"), 7.0),  # parses without a zone
])
def test_parse_retry_after_reads_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "-5", "1e3", "nan", "inf", "1.2.3", "²", "Tue, 99 Foo"])
def test_parse_retry_after_ignores_what_it_cannot_read(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# --- backoff_delay -----------------------------------------------------------------------------

def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    rng = random.Random(1)
    assert [backoff_delay(EXACT, attempt, rng) for attempt in range(0, 7)] == [0.5, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@given(attempt=st.integers(min_value=0, max_value=100),
       initial=st.floats(min_value=0, max_value=60, allow_nan=False),
       maximum=st.floats(min_value=0, max_value=600, allow_nan=False),
       multiplier=st.floats(min_value=1, max_value=1e6, allow_nan=False),
       seed=st.integers(min_value=0, max_value=2**32))
def test_full_jitter_stays_between_zero_and_the_exponential_ceiling(
        attempt: int, initial: float, maximum: float, multiplier: float, seed: int) -> None:
    policy = RetryPolicy(initial=initial, max=maximum, multiplier=multiplier, jitter="full")
    exact = RetryPolicy(initial=initial, max=maximum, multiplier=multiplier, jitter="none")

    delay = backoff_delay(policy, attempt, random.Random(seed))
    ceiling = backoff_delay(exact, attempt, random.Random(seed))

    assert 0 <= delay <= ceiling <= maximum
    assert min(initial, maximum) <= ceiling <= backoff_delay(exact, attempt + 1, random.Random(seed))


# --- check_retry_after -------------------------------------------------------------------------

def throttled(wait: float | None) -> RetriableFetchError:
    return RetriableFetchError("GET https://vendor.example/trades answered 429", status=429, retry_after=wait,
                               url="https://vendor.example/trades")


def test_a_retry_after_beyond_the_maximum_fails_with_the_reason() -> None:
    with pytest.raises(FatalFetchError) as caught:
        check_retry_after(EXACT, throttled(10.5))

    assert str(caught.value) == ("GET https://vendor.example/trades answered 429 and the vendor asked to wait "
                                 "10.5s (Retry-After), more than retry.retry_after.max (10s); try again later "
                                 "or raise the maximum")
    assert (caught.value.status, caught.value.url) == (429, "https://vendor.example/trades")


@pytest.mark.parametrize(("policy", "wait"), [(EXACT, 10.0), (EXACT, None),
                                              (RetryPolicy(retry_after_honour=False, retry_after_max=1), 3600)])
def test_a_retry_after_within_the_maximum_or_ignored_is_accepted(policy: RetryPolicy, wait: float | None) -> None:
    check_retry_after(policy, throttled(wait))


# --- Retrier -----------------------------------------------------------------------------------

def failing(*errors: Exception) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An attempt function raising ``errors`` in turn, then answering "ok"; and its call log."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return attempt, calls


def run(policy: RetryPolicy, attempt: Callable[[], Awaitable[str]], method: str = "GET",
        idempotent: bool | None = None) -> tuple[str, FakeClock, int]:
    clock, retries = FakeClock(), []
    retrier = Retrier(policy, clock, rng=random.Random(0), on_retry=lambda: retries.append(1))
    answer = asyncio.run(retrier.run(attempt, method=method, label="GET /t", idempotent=idempotent))
    return answer, clock, len(retries)


def test_retriable_errors_are_retried_with_backoff() -> None:
    attempt, calls = failing(throttled(None), RetriableFetchError("503"))

    answer, clock, retries = run(EXACT, attempt)

    assert (answer, calls, clock.sleeps, retries) == ("ok", [1, 2, 3], [0.5, 1.0], 2)


def test_retry_after_decides_the_wait_when_honoured() -> None:
    attempt, calls = failing(throttled(3.0), throttled(0.0))

    answer, clock, _ = run(EXACT, attempt)

    assert (answer, clock.sleeps) == ("ok", [3.0, 0.0])


def test_retry_after_is_ignored_when_the_policy_says_so() -> None:
    attempt, _ = failing(throttled(3600))

    _, clock, _ = run(RetryPolicy(initial=0.25, jitter="none", retry_after_honour=False), attempt)

    assert clock.sleeps == [0.25]


def test_a_retry_after_beyond_the_maximum_stops_without_sleeping() -> None:
    attempt, calls = failing(throttled(11))

    with pytest.raises(FatalFetchError, match=r"asked to wait 11s \(Retry-After\)"):
        run(EXACT, attempt)

    assert calls == [1]


def test_running_out_of_attempts_says_so_and_keeps_the_last_error() -> None:
    last = RetriableFetchError("GET /t answered 503 (4th time)", status=503)
    attempt, calls = failing(throttled(None), throttled(None), throttled(None), last, throttled(None))

    with pytest.raises(RetriesExhausted) as caught:
        run(EXACT, attempt)

    assert str(caught.value) == "gave up after 4 attempts: GET /t answered 503 (4th time)"
    assert (caught.value.__cause__, caught.value.status, calls) == (last, 503, [1, 2, 3, 4])


def test_a_fatal_error_is_not_retried() -> None:
    attempt, calls = failing(FatalFetchError("GET /t answered 404"))

    with pytest.raises(FatalFetchError):
        run(EXACT, attempt)

    assert calls == [1]


def test_a_non_idempotent_request_is_not_retried_unless_declared_safe() -> None:
    attempt, calls = failing(throttled(None))
    with pytest.raises(FatalFetchError, match="POST is not idempotent and declares no idempotency key"):
        run(EXACT, attempt, method="POST")
    assert calls == [1]

    attempt, calls = failing(throttled(None))
    assert run(EXACT, attempt, method="POST", idempotent=True)[0] == "ok"
    assert calls == [1, 2]


def test_the_budget_stops_before_a_wait_that_would_pass_it() -> None:
    """Waits 0.5, 1 and 2 s: after the third failure the next wait (2 s) would end at 3.5 s > 3 s."""
    policy = dataclasses.replace(EXACT, max_attempts=10, budget=3.0)
    attempt, calls = failing(*[RetriableFetchError("GET /t answered 503", status=503)] * 10)

    with pytest.raises(RetriesExhausted) as caught:
        run(policy, attempt)

    assert calls == [1, 2, 3]
    assert str(caught.value) == ("gave up after 3 attempts (retry.budget of 3s would be exceeded by another "
                                 "wait): GET /t answered 503")


def test_a_budget_that_is_never_reached_changes_nothing() -> None:
    policy = dataclasses.replace(EXACT, budget=60.0)
    attempt, calls = failing(throttled(None), throttled(None))
    answer, clock, _ = run(policy, attempt)
    assert (answer, calls, clock.sleeps) == ("ok", [1, 2, 3], [0.5, 1.0])
