"""The values at one schema path across a batch of records, gathered column-wise.

A top-level field is one C-level ``map`` over the batch (its distinct values one ``set`` of
that map); a nested path (``legs/*/price``) starts from its parent's column, so the ``legs``
lists are looked up once per batch however many leg fields are checked.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

from etrmflow.validation.located import EACH, Path

Concrete = tuple[Any, ...]
"""A path into one record: keys and list indexes."""


class Column:
    """The values at one path: ``values()[k]`` sits in record ``where(k)[0]`` at ``where(k)[1]``.

    A top-level column reads its field from each record on demand; a nested one links each
    value to its parent's value (``links[k]``) by a list index or a key.
    """

    __slots__ = ("_dicts", "_values", "key", "keys", "links", "owners", "parent", "path")

    def __init__(self, owners: list[int] | None = None, values: list[Any] | None = None, *,
                 path: Concrete = (), dicts: list[dict[str, Any]] | None = None,
                 parent: Column | None = None, links: list[int] | None = None,
                 keys: list[int] | None = None, key: str | None = None) -> None:
        self.owners, self.path, self._values, self._dicts = owners, path, values, dicts
        self.parent, self.links, self.keys, self.key = parent, links, keys, key

    def values(self) -> list[Any]:
        if self._values is None:
            assert self._dicts is not None
            self._values = list(map(dict.get, self._dicts, repeat(self.path[0])))
        return self._values

    def distinct(self) -> set[Any]:
        """The distinct values; TypeError if one is unhashable (a list or dict)."""
        if self._values is None and self._dicts is not None:
            return set(map(dict.get, self._dicts, repeat(self.path[0])))
        return set(self.values())

    def where(self, k: int) -> tuple[int, Concrete]:
        """(record index, path in the record) of value ``k``."""
        if self.parent is None:
            assert self.owners is not None
            return self.owners[k], self.path
        assert self.links is not None
        owner, path = self.parent.where(self.links[k])
        return owner, (*path, self.key if self.keys is None else self.keys[k])


class Columns:
    """The columns of one batch, built on demand and shared between paths with a prefix."""

    def __init__(self, records: list[Any], rows: list[int]) -> None:
        self._records = records
        self._rows = rows
        self._cache: dict[Path, Column] = {}
        self._dict_rows: tuple[list[int], list[dict[str, Any]]] | None = None

    def at(self, path: Path) -> Column:
        column = self._cache.get(path)
        if column is None:
            column = self._build(path)
            self._cache[path] = column
        return column

    def _build(self, path: Path) -> Column:
        if not path:
            return Column(self._rows, [self._records[i] for i in self._rows])
        if len(path) == 1 and path[0] != EACH:
            owners, dicts = self.dicts()
            return Column(owners, path=path, dicts=dicts)
        return _step(self.at(path[:-1]), path[-1])

    def dicts(self) -> tuple[list[int], list[dict[str, Any]]]:
        """(record indexes, records) of the batch's dict records."""
        if self._dict_rows is None:
            records, rows = self._records, self._rows
            if len(rows) == len(records) and set(map(type, records)) == {dict}:
                self._dict_rows = (rows, records)
            else:
                owners = [i for i in rows if isinstance(records[i], dict)]
                self._dict_rows = (owners, [records[i] for i in owners])
        return self._dict_rows


def _step(parent: Column, step: str) -> Column:
    parents = parent.values()
    if step == EACH:
        hits = [k for k, value in enumerate(parents) if isinstance(value, list)]
        return Column(values=[item for k in hits for item in parents[k]], parent=parent,
                      links=[k for k in hits for _ in parents[k]],
                      keys=[i for k in hits for i in range(len(parents[k]))])
    hits = [k for k, value in enumerate(parents) if isinstance(value, dict) and step in value]
    return Column(values=[parents[k][step] for k in hits], parent=parent, links=hits, key=step)
