"""A request quota shared by every concurrent request of a connector (e.g. 30 a minute).

A sliding window: a request may start when fewer than ``requests`` started in the last ``per``
seconds; otherwise it waits for the oldest to leave the window. Staying under the quota beats
provoking 429s and temporary bans.
"""

from __future__ import annotations

import asyncio
from collections import deque

from etrmflow.clock import Clock
from etrmflow.plan import RatePolicy

_EPSILON = 1e-9


class RateLimiter:
    def __init__(self, policies: list[RatePolicy], clock: Clock) -> None:
        self.policies = policies
        self.clock = clock
        self._starts: list[deque[float]] = [deque() for _ in policies]
        self._lock = asyncio.Lock()
        self.waited = 0.0

    async def acquire(self) -> None:
        if not self.policies:
            return
        async with self._lock:  # one waiter at a time keeps the order fair and the count exact
            while (wait := self._wait()) > 0:
                self.waited += wait
                await self.clock.sleep(wait)
            now = self.clock.monotonic()
            for starts in self._starts:
                starts.append(now)

    def _wait(self) -> float:
        now = self.clock.monotonic()
        longest = 0.0
        for policy, starts in zip(self.policies, self._starts):
            # The tolerance stops a sub-nanosecond float remainder from looping forever.
            while starts and now - starts[0] >= policy.per - _EPSILON:
                starts.popleft()
            if len(starts) >= policy.requests:
                longest = max(longest, policy.per - (now - starts[0]))
        return longest
