"""Parsing a record key from the command line and matching stored values against it. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class BadKey(ValueError):
    """The key given does not fit the contract's primary key."""


def parse_key(values: Sequence[str], primary_key: Sequence[str]) -> dict[str, str]:
    """``["ACME-T-1", "2"]`` or ``["trade_id=ACME-T-1"]`` -> ``{"trade_id": "ACME-T-1", ...}``.

    Positional values fill the key columns in order, so fewer values than columns give a prefix
    (``ACME-T-1`` alone: every version of that trade). ``name=value`` names any key columns.
    """
    if not primary_key:
        raise BadKey("the pipeline's contract has no primary_key, so records have no key to trace")
    named = [v for v in values if "=" in v and v.split("=", 1)[0] in primary_key]
    if named and len(named) != len(values):
        raise BadKey("give either every key value in order or only name=value pairs, not both")
    if named:
        return _named(named, primary_key)
    if len(values) > len(primary_key):
        raise BadKey(f"{len(values)} values given, but the primary key has {len(primary_key)} "
                        f"column(s): {', '.join(primary_key)}")
    return dict(zip(primary_key, values))


def _named(pairs: Sequence[str], primary_key: Sequence[str]) -> dict[str, str]:
    key: dict[str, str] = {}
    for pair in pairs:
        name, value = pair.split("=", 1)
        if name in key:
            raise BadKey(f"key column {name} given twice")
        key[name] = value
    return {name: key[name] for name in primary_key if name in key}


def text(value: Any) -> str:
    """How a stored key value is written on the command line (2.0 stored as REAL is ``2``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def matches(record: Any, key: Mapping[str, str]) -> bool:
    """Whether ``record`` (a mapping) has every value of ``key``."""
    if not isinstance(record, Mapping):
        return False
    return all(name in record and record[name] is not None and text(record[name]) == value
               for name, value in key.items())
