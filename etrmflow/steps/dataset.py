"""The base of whole-dataset steps: what the engine promises them, and what they tell it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from etrmflow.components import Transform

DEFAULT_CHUNK_ROWS = 50_000
"""Rows per chunk when a step does not say (``chunk_rows``)."""
CHUNK_ROWS = {"type": "integer", "minimum": 1,
              "description": "Rows handed to the step at once (whole groups, so a bigger group makes a "
                             "bigger chunk); default 50000. Bounds the step's memory."}
"""Options schema of ``chunk_rows``, which every built-in whole-dataset step accepts."""


@dataclass(frozen=True, slots=True)
class Grain:
    """What the rows of a step's output are, when they are no longer the contract's records:
    the columns that identify a row (the sinks' default key) and the columns it has."""

    key: tuple[str, ...]
    columns: tuple[str, ...]


class DatasetStep(Transform):
    """A step that sees the rows of every page together (dedupe across pages, aggregation).

    The engine runs the steps before it page by page and stages their output on disk
    (SQLite, under the target folder), in the page's commit. After the last page it reads the
    staged rows back and hands them to ``apply_chunks`` in chunks:

    * chunks come sorted by the ``group_key()`` columns (nulls first; numbers, text and
      timestamps in their natural order), and a group (rows with equal key values) is never
      split across two chunks. Rows of a group keep the order they arrived in: page by page,
      row by row. ``[]`` means a single chunk with every row, so memory grows with the run.
    * a chunk holds whole groups, up to ``chunk_rows()`` rows (None: the engine's default);
      one group bigger than that is a chunk of its own. Memory is bounded by the chunk size
      and the largest group, never by the length of the run.
    * values and dtypes come back as they were staged (Decimal stays Decimal, timestamps keep
      their zone, categories their categories); the index does not: chunks are numbered from 0.
    * every chunk has every column staged so far, in the order first seen: a column the pages
      of a chunk lacked (an optional field) is empty there. A page without a group key column
      stages its rows with an empty key; a key column no page had fails the run at the finish.

    ``apply_chunks`` yields output frames; by default it calls ``apply`` on each chunk.
    Override it to carry state across chunks or to emit rows at the end; ``scratch`` is an
    empty folder the step may fill during the call. The steps after this one run on each output
    frame, and its rows reach the sinks under a batch id derived from the staged input, so a
    rerun upserts the same rows. A resumed run reads what the interrupted run staged, then
    runs ``apply_chunks`` over everything again.

    ``counters()`` returns numbers the run records in ``run_results.json`` under
    ``steps["transforms[<index>].<type>"]`` (e.g. ``{"matched": 120, "breaks": 3}``); the
    engine reads them once the step's output is written.
    """

    whole_dataset: ClassVar[bool] = True

    def __init__(self, options: Any, *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.counts: dict[str, int] = {}

    def group_key(self) -> list[str]:
        return []

    def output_grain(self) -> Grain | None:
        """None: output rows are records of the contract, as the input's were (dedupe). A step
        whose rows are something else (one per group: aggregate, vwap) says what they are, and
        sinks then take from the contract only the columns it keeps, keyed by its key."""
        return None

    def chunk_rows(self) -> int | None:
        value = self.options.get("chunk_rows")
        return int(value) if value is not None else None

    def apply_chunks(self, chunks: Iterator[pd.DataFrame], scratch: Path) -> Iterator[pd.DataFrame]:
        for chunk in chunks:
            yield self.apply(chunk)

    def counters(self) -> dict[str, int]:
        return dict(self.counts)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)
