"""The shared request quota, on a fake clock."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from etrmflow.clock import FakeClock
from etrmflow.engine.ratelimit import RateLimiter
from etrmflow.plan import RatePolicy


def starts_of(requests: int, per: float, count: int, concurrency: int) -> list[float]:
    clock = FakeClock(start=0.0)
    limiter = RateLimiter([RatePolicy(requests=requests, per=per)], clock)
    starts: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            await limiter.acquire()
            starts.append(clock.monotonic())

    async def main() -> None:
        share, extra = divmod(count, concurrency)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))

    asyncio.run(main())
    return starts


def test_thirty_a_minute_across_concurrent_requests() -> None:
    starts = starts_of(30, 60.0, 95, concurrency=8)
    assert len(starts) == 95
    assert starts[:30] == [0.0] * 30            # a full window is allowed at once
    assert starts[30] == 60.0 and starts[60] == 120.0 and starts[90] == 180.0


@settings(max_examples=60, deadline=None)
@given(requests=st.integers(1, 10), per=st.floats(0.1, 100), count=st.integers(1, 60),
       concurrency=st.integers(1, 6))
def test_no_window_ever_holds_more_than_the_quota(requests: int, per: float, count: int, concurrency: int) -> None:
    starts = sorted(starts_of(requests, per, count, concurrency))
    for index, start in enumerate(starts):
        in_window = [s for s in starts[index:] if s - start < per - 1e-9]
        assert len(in_window) <= requests


def test_no_policy_never_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter([], clock)
    asyncio.run(limiter.acquire())
    assert clock.sleeps == []
