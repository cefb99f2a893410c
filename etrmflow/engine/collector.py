"""Fewer passes of Python's cyclic garbage collector while a run streams pages.

A run allocates a page of records (thousands of dicts and lists) at a time and frees it a page
later. With the default thresholds the collector runs every few hundred allocations, and its
oldest generation holds every object of pandas, numpy, aiohttp and the engine, which live as
long as the process: traversing them again and again cost about a tenth of a run's CPU
(benchmarks/bench_end_to_end.py, docs/performance.md). Reference counting frees the pages
themselves; the collector is only needed for cycles, and still runs, less often.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

THRESHOLDS = (10_000, 10, 10)
"""Allocations before a young collection (default 700), and the usual ratios above it."""
_lock = threading.Lock()
_runs = 0
_saved = gc.get_threshold()
_froze = False


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """While the block runs: objects alive at its start are frozen out of the collector's view
    (``gc.freeze``, unless the process froze objects itself) and young collections are rarer.
    Nested and concurrent blocks share one setting; the last to leave restores the process's
    own thresholds and unfreezes what it froze."""
    global _runs, _saved, _froze
    with _lock:
        _runs += 1
        if _runs == 1:
            _saved = gc.get_threshold()
            _froze = gc.get_freeze_count() == 0  # a process that froze objects itself keeps them so
            if _froze:
                gc.freeze()
            gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                gc.set_threshold(*_saved)
                if _froze:
                    gc.unfreeze()
