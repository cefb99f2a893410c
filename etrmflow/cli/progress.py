"""Progress of ``etrmflow run``: a live line per pipeline on a terminal, plain log lines elsewhere.

The engine only calls ``RunOptions.on_progress`` with a :class:`~etrmflow.results.Progress`
snapshot; everything about terminals lives here. Both displays run on the event loop thread,
so they need no lock.
"""

from __future__ import annotations

import logging
import time
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TextIO

from etrmflow.results import Progress

log = logging.getLogger("etrmflow.progress")
REDRAW_INTERVAL = 0.2
"""A terminal is redrawn at most five times a second: more is flicker, and costs the loop time."""
_FALSE = ("", "0", "false", "no")


def progress_text(progress: Progress) -> str:
    """``trades: pages 3, records 250 (83.1/s), quarantined 12, retries 0, open breakers 0``."""
    return (f"{progress.pipeline}: pages {progress.pages}, records {progress.records} "
            f"({progress.records_per_s:.1f}/s), quarantined {progress.quarantined}, "
            f"retries {progress.retries}, open breakers {progress.open_breakers}")


class LogProgress:
    """Every ``interval`` seconds per pipeline, one INFO line through the logger (text or JSON)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}

    def __call__(self, progress: Progress) -> None:
        now = self.clock()
        last = self._last.setdefault(progress.pipeline, now)  # the first page starts the interval
        if progress.done or now - last < self.interval:
            return  # the summary reports the end
        self._last[progress.pipeline] = now
        log.info("progress %s", progress_text(progress), extra={
            "kind": "progress", "pipeline": progress.pipeline, "pages": progress.pages,
            "records": progress.records, "records_per_s": round(progress.records_per_s, 1),
            "quarantined": progress.quarantined, "retries": progress.retries,
            "open_breakers": progress.open_breakers})


class TerminalProgress:
    """One line per pipeline, rewritten in place with ANSI cursor moves.

    Log records clear the lines before they are written (see :meth:`clearing_filter`), and the
    next redraw puts them back below, so log lines are never overwritten.
    """

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic,
                 min_interval: float = REDRAW_INTERVAL) -> None:
        self.stream = stream
        self.clock = clock
        self.min_interval = min_interval
        self.lines: dict[str, str] = {}
        self._drawn = 0
        self._last = float("-inf")

    def __call__(self, progress: Progress) -> None:
        mark = "done " if progress.done else ""
        self.lines[progress.pipeline] = mark + progress_text(progress)
        now = self.clock()
        if progress.done or now - self._last >= self.min_interval:
            self._last = now
            self.draw()

    def draw(self) -> None:
        self._erase()
        for text in self.lines.values():
            self.stream.write(f"\x1b[2K{text}\n")
        self._drawn = len(self.lines)
        self.stream.flush()

    def clear(self) -> None:
        """Remove the live lines (before a log line, and when the run ends)."""
        self._erase()
        self._drawn = 0
        self.stream.flush()

    def clearing_filter(self) -> logging.Filter:
        display = self

        class _Clear(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                display.clear()
                return True

        return _Clear()

    def _erase(self) -> None:
        if self._drawn:  # up to the first live line, then clear to the end of the screen
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")


def on_terminal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """A person is watching: a tty, and not a CI job (which may fake one)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and environ.get("CI", "").strip().lower() in _FALSE


def choose_display(stream: TextIO, environ: Mapping[str, str], log_format: str,
                   interval: float) -> LogProgress | TerminalProgress | None:
    """None when progress is off (``--progress-interval 0``)."""
    if interval <= 0:
        return None
    if log_format != "json" and on_terminal(stream, environ):
        return TerminalProgress(stream)
    return LogProgress(interval)


@contextlib.contextmanager
def showing(display: LogProgress | TerminalProgress | None) -> Iterator[None]:
    """While a terminal display is live, log lines first clear it; it is gone when the run ends."""
    if not isinstance(display, TerminalProgress):
        yield
        return
    handlers = logging.getLogger("etrmflow").handlers
    clearing = display.clearing_filter()
    for handler in handlers:
        handler.addFilter(clearing)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(clearing)
        display.clear()
