"""Time behind a seam, so that backoff, Retry-After and token expiry tests run in milliseconds."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone


class Clock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock(Clock):
    """A clock that only moves when slept on or advanced. Sleeps return at once."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def now(self) -> datetime:
        return datetime.fromtimestamp(1_750_000_000 + self._now, tz=timezone.utc)

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(seconds, 0.0)
        await asyncio.sleep(0)


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with a Z, millisecond precision."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
