"""Date-time strings as integer microseconds since the epoch, exactly as etrmflow parses them.

``parse_datetime_with_offset`` builds a datetime and a timezone per string (~6 µs); rules
compare delivery periods by the thousand. The usual shape, ``YYYY-MM-DDTHH:MM:SS`` plus ``Z``
or ``±HH:MM``, is read from its three parts, each memoised (a batch has a few hundred days,
a few dozen clock times and two or three offsets); every other string goes to the parser. A
part outside the ranges both readings accept (an hour of 24, an offset minute of 60) sends the
whole string to the parser too, so the result is always the parser's.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from itertools import repeat
from typing import Any

import numpy as np

from etrmflow.energy import parse_datetime_with_offset

NOT_AN_INSTANT = -(2 ** 63)
"""Below any datetime's microseconds (year 1 is about -6.2e16)."""
_UNSEEN = NOT_AN_INSTANT + 1
_PARSER = NOT_AN_INSTANT + 2  # a part of unusual shape: ask the parser
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_MICROSECOND = timedelta(microseconds=1)
_MEMO_LIMIT = 200_000
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_CLOCK = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]", re.ASCII)
_OFFSET = re.compile(r"[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]", re.ASCII)


def microseconds(text: str) -> int:
    """What the parser makes of ``text``, in microseconds since the epoch (or NOT_AN_INSTANT)."""
    try:
        return (parse_datetime_with_offset(text) - _EPOCH) // _MICROSECOND
    except ValueError:
        return NOT_AN_INSTANT


def _day(text: str) -> int:
    if not _DAY.fullmatch(text):
        return _PARSER
    try:
        return date(int(text[:4]), int(text[5:7]), int(text[8:10])).toordinal() - _EPOCH_DAY
    except ValueError:  # Feb 30, year 0: the parser refuses the whole string as well
        return NOT_AN_INSTANT


def _clock(text: str) -> int:
    if not _CLOCK.fullmatch(text):
        return _PARSER
    return int(text[:2]) * 3600 + int(text[3:5]) * 60 + int(text[6:8])


def _offset(text: str) -> int:
    if text == "Z":
        return 0
    if not _OFFSET.fullmatch(text):
        return _PARSER
    seconds = int(text[1:3]) * 3600 + int(text[4:6]) * 60
    return -seconds if text[0] == "-" else seconds


class Instants:
    """``parse(values)``: an int64 array of instants, NOT_AN_INSTANT for anything that is not
    a date-time string etrmflow accepts. Memoised per string, bounded."""

    def __init__(self) -> None:
        self._memo: dict[Any, int] = {None: NOT_AN_INSTANT}
        self._days: dict[str, int] = {}
        self._clocks: dict[str, int] = {}
        self._offsets: dict[str, int] = {}

    def parse(self, values: list[Any]) -> np.ndarray:
        memo = self._memo
        try:
            instants = np.fromiter(map(memo.get, values, repeat(_UNSEEN)), np.int64, len(values))
        except TypeError:  # a list or dict among the values
            instants = np.array([memo.get(v, _UNSEEN) if type(v) is str else NOT_AN_INSTANT
                                 for v in values], np.int64)
        unseen = np.flatnonzero(instants == _UNSEEN).tolist()
        if unseen:
            new = {values[k] for k in unseen if type(values[k]) is str}
            if len(memo) + len(new) > _MEMO_LIMIT:  # bounded: a cache, not a ledger
                memo.clear()
                memo[None] = NOT_AN_INSTANT
                for parts in (self._days, self._clocks, self._offsets):
                    parts.clear()
            memo.update((text, self._instant(text)) for text in new)
            instants[unseen] = [memo.get(values[k], NOT_AN_INSTANT) for k in unseen]
        return instants

    def _instant(self, text: str) -> int:
        if len(text) in (20, 25) and text[10] == "T":
            # the three part memos, inlined: this runs for every new string
            days, clocks, offsets = self._days, self._clocks, self._offsets
            day, clock, offset = text[:10], text[11:19], text[19:]
            day = days[day] if day in days else days.setdefault(day, _day(day))
            clock = clocks[clock] if clock in clocks else clocks.setdefault(clock, _clock(clock))
            offset = offsets[offset] if offset in offsets else offsets.setdefault(offset, _offset(offset))
            if _PARSER not in (day, clock, offset):
                return NOT_AN_INSTANT if day == NOT_AN_INSTANT else (day * 86400 + clock - offset) * 1_000_000
        return microseconds(text)
