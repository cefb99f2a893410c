"""Retry policy on top of tenacity: exponential backoff with jitter, Retry-After honoured.

The exception class decides: only ``RetriableFetchError`` is retried, and only for idempotent
methods. A Retry-After longer than the policy's maximum fails at once with a clear message
instead of sleeping for an hour.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from etrmflow.clock import Clock
from etrmflow.errors import FatalFetchError, RetriableFetchError, RetriesExhausted
from etrmflow.plan import RetryPolicy

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
log = logging.getLogger("etrmflow.http")
T = TypeVar("T")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), or None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    seconds = _delta_seconds(value)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # "-0000" parses naive; RFC 9110 dates are UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return max((moment - now).total_seconds(), 0.0)


def _delta_seconds(value: str) -> float | None:
    """Delta seconds; fractions accepted, as some gateways send them (``0.5``)."""
    if not (value.isascii() and value.replace(".", "", 1).isdigit()):
        return None
    return float(value)


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Wait before attempt ``attempt + 1``: min(max, initial * multiplier ** (attempt - 1)), jittered."""
    try:
        grown = policy.initial * policy.multiplier ** max(attempt - 1, 0)
    except OverflowError:  # a large multiplier late in a long policy: the cap applies anyway
        grown = policy.max
    ceiling = min(policy.max, grown)
    return rng.uniform(0, ceiling) if policy.jitter == "full" else ceiling


def check_retry_after(policy: RetryPolicy, error: RetriableFetchError) -> None:
    """Refuse a Retry-After beyond the policy's maximum: fail clearly rather than hang."""
    wait = error.retry_after
    if policy.retry_after_honour and wait is not None and wait > policy.retry_after_max:
        raise FatalFetchError(
            f"{error} and the vendor asked to wait {wait:g}s (Retry-After), more than "
            f"retry.retry_after.max ({policy.retry_after_max:g}s); try again later or raise the maximum",
            url=error.url, status=error.status) from None


class Retrier:
    """Runs one request attempt function under a retry policy."""

    def __init__(self, policy: RetryPolicy, clock: Clock, *, rng: random.Random | None = None,
                 on_retry: Callable[[], None] | None = None) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_retry = on_retry

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetriableFetchError) and error.retry_after is not None and self.policy.retry_after_honour:
            return error.retry_after
        return backoff_delay(self.policy, state.attempt_number, self.rng)

    def _before_sleep(self, state: RetryCallState, label: str) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if self.on_retry:
            self.on_retry()
        log.warning("retrying %s (attempt %d of %d) in %.2fs after: %s", label, state.attempt_number + 1,
                    self.policy.max_attempts, wait, error)

    async def run(self, attempt: Callable[[], Awaitable[T]], *, method: str, label: str,
                  idempotent: bool | None = None) -> T:
        retry_allowed = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent

        def retriable(error: BaseException) -> bool:
            if not (retry_allowed and isinstance(error, RetriableFetchError)):
                return False
            check_retry_after(self.policy, error)
            return True

        started = self.clock.monotonic()
        budget = self.policy.budget

        def over_budget(state: RetryCallState) -> bool:
            # tenacity has already computed the next wait: stop rather than sleep past the budget
            return budget is not None and self.clock.monotonic() - started + state.upcoming_sleep > budget

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts if retry_allowed else 1) | over_budget,
            wait=self._wait, retry=retry_if_exception(retriable), sleep=self.clock.sleep,
            before_sleep=lambda state: self._before_sleep(state, label), reraise=True)
        try:
            async for trial in retrying:
                with trial:
                    return await attempt()
        except RetriableFetchError as error:
            attempts = retrying.statistics.get("attempt_number", 1)
            if not retry_allowed:
                raise FatalFetchError(f"{error} ({method} is not idempotent and declares no idempotency "
                                      f"key, so it is not retried)", url=error.url, status=error.status) from error
            spent = (f" (retry.budget of {budget:g}s would be exceeded by another wait)"
                     if budget is not None and attempts < self.policy.max_attempts else "")
            raise RetriesExhausted(f"gave up after {attempts} attempts{spent}: {error}", url=error.url,
                                   status=error.status) from error
        raise AssertionError("unreachable: tenacity either returns or reraises")
