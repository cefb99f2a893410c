"""Splitting a long date range into windows that neither drop nor double-count a moment.

Windows are half-open, ``[start, end)``, contiguous and stepped in local calendar time of the
declared zone: a ``P1D`` step spans 23 or 25 hours across a clock change, and ``P1M`` steps by
calendar months. How a window's bounds are written into a request (a date, an offset
date-time, an inclusive end) is the vendor's convention, declared next to the step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_UTC = ZoneInfo("UTC")
_STEP = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")


class WindowError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    months: int = 0
    days: int = 0
    minutes: int = 0

    def after(self, moment: datetime) -> datetime:
        """Months and days on the local calendar (a day may have 23 or 25 hours), then hours and
        minutes of elapsed time (so an hourly step never stalls or repeats at a clock change)."""
        calendar = moment
        if self.months or self.days:
            month_index = moment.month - 1 + self.months
            year, month = moment.year + month_index // 12, month_index % 12 + 1
            day = min(moment.day, _days_in_month(year, month))
            local = moment.replace(year=year, month=month, day=day, tzinfo=None) + timedelta(days=self.days)
            calendar = local.replace(tzinfo=moment.tzinfo, fold=0)
        if not self.minutes:
            return calendar
        return (calendar.astimezone(_UTC) + timedelta(minutes=self.minutes)).astimezone(moment.tzinfo)


def _days_in_month(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def parse_step(text: str) -> Step:
    """ISO 8601 period (P1D, P7D, P1M, PT6H, P1W) or the short forms 1d, 7d, 6h."""
    short = re.fullmatch(r"(\d+)([dhw])", text.strip())
    if short:
        number, unit = int(short.group(1)), short.group(2)
        return Step(days=number * (7 if unit == "w" else 1)) if unit in "dw" else Step(minutes=number * 60)
    match = _STEP.match(text.strip())
    if not match or text.strip() in ("P", "PT"):
        raise WindowError(f"not a window step: {text!r} (use e.g. P1D, P7D, P1M, PT6H, 7d)")
    years, months, weeks, days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    step = Step(months=years * 12 + months, days=weeks * 7 + days, minutes=hours * 60 + minutes)
    if step == Step():
        raise WindowError(f"window step {text!r} is zero")
    return step


def parse_bound(text: str, zone: ZoneInfo) -> datetime:
    """A date (midnight local) or a date-time (with an offset, or local in ``zone``)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(f"not a date or date-time: {text!r}") from None
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    index: int
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


def _instant(moment: datetime) -> datetime:
    # Python compares and subtracts datetimes sharing a tzinfo on wall-clock time; a clock
    # change makes that wrong, so every comparison here is between UTC instants.
    return moment.astimezone(_UTC)


def split(start: datetime, end: datetime, step: Step) -> list[Window]:
    """Contiguous half-open windows covering ``[start, end)``; the last may be shorter."""
    if _instant(end) <= _instant(start):
        raise WindowError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    windows: list[Window] = []
    current = start
    while _instant(current) < _instant(end):
        following = step.after(current)
        if _instant(following) <= _instant(current):
            raise WindowError(f"step does not advance from {current.isoformat()}")
        last = _instant(following) >= _instant(end)
        windows.append(Window(index=len(windows), start=current, end=end if last else following))
        current = following
    return windows


def render_bound(moment: datetime, fmt: str, *, inclusive_end: bool = False) -> str:
    """How a bound is written into the request: ``date``, ``datetime`` (offset) or strftime."""
    if inclusive_end:
        moment = moment - (timedelta(days=1) if fmt == "date" else timedelta(seconds=1))
    if fmt == "date":
        return moment.date().isoformat()
    if fmt == "datetime":
        return moment.isoformat()
    if fmt == "datetime_utc":
        return moment.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")
    return moment.strftime(fmt)
