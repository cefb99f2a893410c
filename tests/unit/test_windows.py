"""Date windows: contiguous, half-open, calendar-stepped across clock changes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etrmflow.windows import Step, WindowError, parse_bound, parse_step, render_bound, split

BERLIN = ZoneInfo("Europe/Berlin")


def hours(window) -> float:  # type: ignore[no-untyped-def]
    return (window.end.astimezone(timezone.utc) - window.start.astimezone(timezone.utc)) / timedelta(hours=1)


def test_daily_windows_across_the_spring_and_autumn_changes_have_23_and_25_hours() -> None:
    windows = split(parse_bound("2025-03-29", BERLIN), parse_bound("2025-04-01", BERLIN), parse_step("P1D"))
    assert [hours(w) for w in windows] == [24, 23, 24]
    autumn = split(parse_bound("2025-10-26", BERLIN), parse_bound("2025-10-27", BERLIN), parse_step("1d"))
    assert [hours(w) for w in autumn] == [25]
    assert [render_bound(w.start, "date") for w in windows] == ["2025-03-29", "2025-03-30", "2025-03-31"]
    assert render_bound(windows[1].end, "datetime") == "2025-03-31T00:00:00+02:00"


def test_monthly_windows_follow_the_calendar_and_the_last_is_cut_at_the_end() -> None:
    windows = split(parse_bound("2025-01-31", BERLIN), parse_bound("2025-04-15", BERLIN), parse_step("P1M"))
    assert [(render_bound(w.start, "date"), render_bound(w.end, "date")) for w in windows] == [
        ("2025-01-31", "2025-02-28"), ("2025-02-28", "2025-03-28"), ("2025-03-28", "2025-04-15")]


def test_inclusive_end_and_strftime_rendering() -> None:
    window = split(parse_bound("2025-01-01", BERLIN), parse_bound("2025-01-08", BERLIN), parse_step("P7D"))[0]
    assert render_bound(window.end, "date", inclusive_end=True) == "2025-01-07"
    assert render_bound(window.start, "%d/%m/%Y") == "01/01/2025"
    assert render_bound(window.start, "datetime_utc") == "2024-12-31T23:00:00Z"


@pytest.mark.parametrize("text", ["P", "PT", "1x", "P0D", "7"])
def test_bad_steps_are_refused(text: str) -> None:
    with pytest.raises(WindowError):
        parse_step(text)


def test_an_empty_range_is_an_error_not_zero_windows() -> None:
    with pytest.raises(WindowError, match="is not after its start"):
        split(parse_bound("2025-02-01", BERLIN), parse_bound("2025-02-01", BERLIN), Step(days=1))


ZONES = st.sampled_from(["Europe/Berlin", "Europe/London", "America/Chicago", "UTC", "Australia/Lord_Howe"])


@settings(max_examples=200, deadline=None)
@given(zone=ZONES, start=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
       length=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=400)),
       step=st.sampled_from(["P1D", "P7D", "P1M", "PT6H", "PT1H", "P3M", "1d"]))
def test_windows_cover_the_range_exactly_once(zone: str, start: datetime, length: timedelta, step: str) -> None:
    tz = ZoneInfo(zone)
    begin = start.replace(tzinfo=tz)
    end = (begin.astimezone(timezone.utc) + length).astimezone(tz)
    windows = split(begin, end, parse_step(step))
    utc = timezone.utc
    assert windows[0].start.astimezone(utc) == begin.astimezone(utc)
    assert windows[-1].end.astimezone(utc) == end.astimezone(utc)
    for before, after in zip(windows, windows[1:]):  # contiguous: nothing dropped, nothing twice
        assert before.end.astimezone(utc) == after.start.astimezone(utc)
    assert all(w.start.astimezone(utc) < w.end.astimezone(utc) for w in windows)
    probe = begin.astimezone(utc) + (end.astimezone(utc) - begin.astimezone(utc)) / 3
    assert sum(1 for w in windows if w.start.astimezone(utc) <= probe < w.end.astimezone(utc)) == 1
