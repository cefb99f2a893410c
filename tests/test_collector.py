"""A run collects garbage less often, and leaves the process's collector as it found it."""

from __future__ import annotations

import gc
import threading
import weakref

from etrmflow.engine.collector import THRESHOLDS, fewer_collections


def test_thresholds_and_frozen_objects_are_restored_after_nested_and_concurrent_runs() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    inside: list[tuple[int, ...]] = []
    release = threading.Event()

    def other_run() -> None:
        with fewer_collections():
            inside.append(gc.get_threshold())
            release.wait(5)

    with fewer_collections():
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > frozen  # what lived before the run is out of the collector's view
        worker = threading.Thread(target=other_run)
        worker.start()
        with fewer_collections():
            assert gc.get_threshold() == THRESHOLDS
        assert gc.get_threshold() == THRESHOLDS  # the other run is still going
    assert gc.get_threshold() == THRESHOLDS
    release.set()
    worker.join(5)
    assert inside == [THRESHOLDS]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_cycles_made_during_a_run_are_still_collected() -> None:
    class Node:
        pass

    with fewer_collections():
        node = Node()
        node.self = node  # type: ignore[attr-defined]
        ref = weakref.ref(node)
        del node
        gc.collect()
        assert ref() is None


def test_objects_the_process_froze_itself_stay_frozen() -> None:
    gc.freeze()
    try:
        with fewer_collections():
            pass
        assert gc.get_freeze_count() > 0  # not unfrozen by the run
    finally:
        gc.unfreeze()
