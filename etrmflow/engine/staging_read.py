"""Staged rows read back in key order, in chunks cut only between groups.

SQLite sorts (spilling to temporary files, not to memory), so memory holds one chunk at a time:
at most ``chunk_rows`` rows, or one group when a single group is bigger. Rows of a group keep
the order they arrived in (batch by batch, row by row).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from etrmflow.engine.staging import StagingStore, key_columns, rows_table
from etrmflow.engine.staging_codec import (
    StagingError,
    decode_column,
    dtype_from_spec,
    loads_tagged,
    object_array,
)

FETCH = 2000
"""Rows fetched from SQLite at a time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    frame: pd.DataFrame
    digest: str
    """Derived from the stage, the chunk's key range, row count and input batch ids: the same
    staged input gives the same digest, in a rerun as in a resumed run."""


@dataclass(frozen=True, slots=True)
class _Schema:
    columns: list[tuple[Any, int, str, Any]]  # (name, slot, codec, dtype)
    specs: dict[Any, str]  # name -> dtype spec as text, to compare batches


def _schemas(db: sqlite3.Connection, stage: int) -> tuple[dict[int, tuple[str, int]], dict[int, _Schema]]:
    batches = {arrival: (batch_id, schema_id) for batch_id, arrival, schema_id in db.execute(
        "SELECT batch_id, arrival, schema_id FROM batches WHERE stage = ?", (stage,))}
    wanted = {schema_id for _, schema_id in batches.values()}
    schemas = {}
    for schema_id, text in db.execute("SELECT id, text FROM schemas"):
        if schema_id in wanted:
            parsed = orjson.loads(text)
            columns = [(loads_tagged(c["name"]), c["slot"], c["codec"], dtype_from_spec(c["dtype"])) for c in parsed]
            schemas[schema_id] = _Schema(columns, {loads_tagged(c["name"]): orjson.dumps(c["dtype"]).decode()
                                                   for c in parsed})
    return batches, schemas


def read_chunks(store: StagingStore, stage: int, width: int, chunk_rows: int) -> Iterator[Chunk]:
    """The stage's rows sorted by their key (``width`` key columns), chunk by chunk."""
    reader = sqlite3.connect(str(store.path), check_same_thread=False)
    try:
        exists = reader.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (rows_table(stage),)).fetchone()
        if not exists:
            return
        reader.execute("PRAGMA temp_store=FILE")  # the sort spills to disk, never to memory
        batches, schemas = _schemas(reader, stage)
        names = [loads_tagged(name) for (name,) in reader.execute(
            "SELECT name FROM slots WHERE stage = ? ORDER BY slot", (stage,))]
        order = ", ".join([*key_columns(width), "arrival", "seq"])
        columns = ", ".join(["arrival", *key_columns(width), *(f"c{i}" for i in range(len(names)))])
        cursor = reader.execute(f"SELECT {columns} FROM {rows_table(stage)} ORDER BY {order}")
        decoder = _Decoder(stage, width, batches, schemas, names)
        for rows in _cut(cursor, width, chunk_rows):
            yield decoder.chunk(rows)
    except sqlite3.Error as exc:
        raise StagingError(f"reading the staged rows of {store.path} failed: {exc}") from exc
    finally:
        reader.close()


def _cut(cursor: sqlite3.Cursor, width: int, chunk_rows: int) -> Iterator[list[tuple[Any, ...]]]:
    """Lists of rows: whole groups, as many as fit in ``chunk_rows`` (one group may be more)."""
    chunk: list[tuple[Any, ...]] = []
    group: list[tuple[Any, ...]] = []
    current: Any = object()
    end = 1 + 2 * width
    while rows := cursor.fetchmany(FETCH):
        for row in rows:
            key = row[1:end]
            if group and key != current:
                if chunk and len(chunk) + len(group) > chunk_rows:
                    yield chunk
                    chunk = []
                chunk.extend(group)
                group = []
            current = key
            group.append(row)
    if chunk and len(chunk) + len(group) > chunk_rows:
        yield chunk
        chunk = []
    chunk.extend(group)
    if chunk:
        yield chunk


class _Decoder:
    def __init__(self, stage: int, width: int, batches: dict[int, tuple[str, int]],
                 schemas: dict[int, _Schema], names: list[Any]) -> None:
        self.stage = stage
        self.width = width
        self.batches = batches
        self.schemas = schemas
        self.names = names
        """Every column of the stage, first seen first: each chunk has them all, in this order."""
        self.offset = 1 + 2 * width  # where the value columns start in a row

    def chunk(self, rows: list[tuple[Any, ...]]) -> Chunk:
        by_schema: dict[int, list[int]] = {}
        for position, row in enumerate(rows):
            by_schema.setdefault(self.batches[row[0]][1], []).append(position)
        if len(by_schema) == 1:
            frame = self._frame(rows, self.schemas[next(iter(by_schema))])
        else:
            frame = self._mixed(rows, by_schema)
        return Chunk(frame=self._complete(frame), digest=self._digest(rows))

    def _complete(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Every column of the stage: one that no batch of this chunk had (an optional field
        some pages lack) is empty, so a chunk boundary never decides whether a column exists."""
        if list(frame.columns) == self.names:
            return frame
        for name in self.names:
            if name not in frame.columns:
                frame[name] = object_array([None] * len(frame))
        return frame[self.names]

    def _frame(self, rows: list[tuple[Any, ...]], schema: _Schema) -> pd.DataFrame:
        at = self.offset
        # Series with their dtype given: pandas would otherwise infer one for object columns
        data = {name: pd.Series(decode_column([row[at + slot] for row in rows], codec, dtype), dtype=dtype, copy=False)
                for name, slot, codec, dtype in schema.columns}
        return pd.DataFrame(data, columns=[name for name, *_ in schema.columns]) if data \
            else pd.DataFrame(index=range(len(rows)))

    def _mixed(self, rows: list[tuple[Any, ...]], by_schema: dict[int, list[int]]) -> pd.DataFrame:
        """Rows of batches with different columns or dtypes: as ``pd.concat`` of their frames
        would be, with each column's dtype restored where every batch agrees on it."""
        parts = sorted(by_schema.items(), key=lambda item: item[1][0])
        frames = [self._frame([rows[p] for p in positions], self.schemas[sid]) for sid, positions in parts]
        positions = np.concatenate([np.asarray(p) for _, p in parts])
        frame = concat_frames(frames).iloc[np.argsort(positions, kind="stable")]
        frame = frame.reset_index(drop=True)
        for name in frame.columns:
            frame[name] = _agreed(frame[name], [self.schemas[sid] for sid, _ in parts], name)
        return frame

    def _digest(self, rows: list[tuple[Any, ...]]) -> str:
        inputs = sorted({self.batches[row[0]][0] for row in rows})
        first, last = rows[0][1:self.offset], rows[-1][1:self.offset]
        identity = [self.stage, len(rows), list(first), list(last), inputs]
        return hashlib.sha256(orjson.dumps(identity)).hexdigest()[:32]


def _agreed(series: pd.Series, schemas: list[_Schema], name: Any) -> pd.Series:
    specs = {schema.specs.get(name) for schema in schemas}
    if None in specs:
        return series  # absent from some batches: missing values decide, as in pd.concat
    dtypes = [next(d for n, _, _, d in schema.columns if n == name) for schema in schemas]
    if len(specs) == 1:
        return series if series.dtype == dtypes[0] else series.astype(dtypes[0])
    if all(isinstance(d, pd.CategoricalDtype) and not d.ordered for d in dtypes):
        categories = pd.Index([c for d in dtypes for c in d.categories]).unique()
        return series.astype(pd.CategoricalDtype(categories))
    return series


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat`` of frames that keeps every value: a bool column meeting a column of another
    type is joined as objects, since pandas 3 turns bool and int64 into int64 (True became 1)."""
    kinds: dict[Any, set[bool]] = {}
    for frame in frames:
        for name, dtype in frame.dtypes.items():
            kinds.setdefault(name, set()).add(pd.api.types.is_bool_dtype(dtype))
    mixed = [name for name, seen in kinds.items() if len(seen) > 1]
    if mixed:
        frames = [frame.astype({name: object for name in mixed if name in frame.columns}) for frame in frames]
    return pd.concat(frames, ignore_index=True)
