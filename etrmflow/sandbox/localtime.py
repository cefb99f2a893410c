"""Fast local-time arithmetic for the sandbox data, in whole seconds since the Unix epoch.

Formatting through ``datetime`` and ``zoneinfo`` costs microseconds per timestamp, and the
generator formats several per record. All zones the sandbox uses follow the EU rule (summer
time from the last Sunday of March to the last Sunday of October, switching at 01:00 UTC),
so the offset is a comparison against two instants per year. ``tests/sandbox`` checks the
result against ``zoneinfo`` around both clock changes.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

DAY = 86_400
HOUR = 3_600
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_FIRST_YEAR, _LAST_YEAR = 2023, 2027

# Standard (winter) UTC offset of each zone the sandbox uses, in seconds.
STANDARD_OFFSET: dict[str, int] = {
    "Europe/Berlin": HOUR,
    "Europe/Amsterdam": HOUR,
    "Europe/Paris": HOUR,
    "Europe/London": 0,
}


def epoch_day(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a calendar date."""
    return dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL


def _last_sunday(year: int, month: int) -> int:
    last = dt.date(year + (month == 12), month % 12 + 1, 1) - dt.timedelta(days=1)
    return last.toordinal() - _EPOCH_ORDINAL - (last.weekday() + 1) % 7


_SUMMER: dict[int, tuple[int, int]] = {
    year: (_last_sunday(year, 3) * DAY + HOUR, _last_sunday(year, 10) * DAY + HOUR)
    for year in range(_FIRST_YEAR, _LAST_YEAR + 1)
}
_FIRST_DAY = epoch_day(_FIRST_YEAR, 1, 1)
_DATES: tuple[str, ...] = tuple(
    (dt.date.fromordinal(_EPOCH_ORDINAL + _FIRST_DAY + n)).isoformat()
    for n in range(epoch_day(_LAST_YEAR + 1, 1, 1) - _FIRST_DAY)
)
_YEAR_OF_DAY: tuple[int, ...] = tuple(int(text[:4]) for text in _DATES)


def date_text(day: int) -> str:
    """``YYYY-MM-DD`` of an epoch day (2023 to 2027)."""
    return _DATES[day - _FIRST_DAY]


def utc_offset(instant: int, zone: str) -> int:
    """UTC offset of ``zone`` at a UTC instant, in seconds."""
    start, end = _SUMMER[_YEAR_OF_DAY[instant // DAY - _FIRST_DAY]]
    return STANDARD_OFFSET[zone] + (HOUR if start <= instant < end else 0)


def local_to_utc(day: int, seconds: int, zone: str) -> int:
    """The UTC instant of local wall time ``seconds`` after midnight on ``day``.

    Wall times repeated in autumn resolve to the first (summer time) occurrence; the sandbox
    never asks for a wall time that does not exist in spring.
    """
    naive = day * DAY + seconds
    summer = naive - STANDARD_OFFSET[zone] - HOUR
    if utc_offset(summer, zone) == STANDARD_OFFSET[zone] + HOUR:
        return summer
    return naive - STANDARD_OFFSET[zone]


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, HOUR)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


@cache  # delivery boundaries fall on whole hours: a few thousand distinct values a year
def local_iso(instant: int, zone: str) -> str:
    """ISO 8601 local time with its offset, e.g. ``2025-03-31T00:00:00+02:00``."""
    offset = utc_offset(instant, zone)
    day, seconds = divmod(instant + offset, DAY)
    return f"{date_text(day)}T{_clock(seconds)}+{offset // HOUR:02d}:00"


def utc_iso(instant: int) -> str:
    """ISO 8601 UTC with a ``Z``, e.g. ``2025-03-28T14:05:09Z``."""
    day, seconds = divmod(instant, DAY)
    return f"{date_text(day)}T{_clock(seconds)}Z"
