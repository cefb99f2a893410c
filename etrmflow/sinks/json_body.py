"""Rows as the exact JSON bytes a vendor receives, and the idempotency key derived from them.

Money is never sent through a float: a ``Decimal`` is written as JSON number text with every
digit it has (``Decimal('40.50')`` -> ``40.50``), and a column the contract declares an exact
decimal (``x-etrmflow-decimal``) is sent at its declared scale, or the write fails rather than
round. Timestamps are ISO 8601 with their UTC offset; a timestamp without a time zone is refused,
because the vendor would have to guess which instant it means.

The same rows always give the same bytes (keys sorted, no whitespace), so the same batch always
gets the same key: a retried request, a rerun or a resumed run reuses it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from etrmflow import jsontext
from etrmflow.errors import SinkError
from etrmflow.sinks.common import decimal_cell, is_missing
from etrmflow.validation.decimals import DecimalSpec

if TYPE_CHECKING:
    import pandas as pd

KEY_SCHEME = b"etrmflow-http-sink/1"
"""Part of every key: a change to how bodies or keys are made must change every key."""
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_INT64_LIMIT = 2.0 ** 63


def row_objects(frame: pd.DataFrame, columns: Sequence[str] | None, decimals: Mapping[str, DecimalSpec],
                *, numbers: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The frame's rows as JSON-ready objects (``columns`` only, when given), in frame order.

    ``numbers``: columns the contract types ``integer`` or ``number``, whose whole numbers are
    sent as integers (see ``_whole``)."""
    names = list(columns) if columns is not None else [str(c) for c in frame.columns]
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise SinkError(f"columns {missing} are not in the rows (they have: {', '.join(map(str, frame.columns))})")
    cells = {name: _column(frame[name], name, decimals.get(name), name in numbers) for name in names}
    return [dict(zip(names, values)) for values in zip(*cells.values())] if names else [{} for _ in range(len(frame))]


def _column(series: pd.Series, name: str, spec: DecimalSpec | None, number: bool) -> list[Any]:
    try:
        if spec is not None:
            return [decimal_cell(value, spec) for value in series.tolist()]
        values = [_cell(value) for value in series.tolist()]
        return [_whole(value) for value in values] if number else values
    except (TypeError, ValueError) as exc:
        raise SinkError(f"column {name!r}: {exc}") from None


def _whole(value: Any) -> Any:
    """A whole number held as a float, as an integer: 5.0 -> 5.

    pandas turns a column of integers into floats when one row has none, or one a fraction, so
    the same row would otherwise be sent as ``5`` or ``5.0`` depending on the other rows of its
    page, and get another idempotency key. Floats from 2^63 on were never integers in the data
    (pandas keeps larger integers as they are), so they stay floats."""
    if type(value) is float and value.is_integer() and abs(value) < _INT64_LIMIT:
        return int(value)
    return value


def _cell(value: Any) -> Any:
    if is_missing(value):
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"the timestamp {value.isoformat()} has no time zone; give it one in a step "
                             f"(e.g. tz_localize) so the vendor is told which instant it is")
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars a step may have left in an object column
    return item() if callable(item) else value


def _default(value: Any) -> Any:
    """What orjson cannot write itself: a Decimal as its own digits, never through a float."""
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise TypeError(f"{value} is not a finite number")
        return orjson.Fragment(format(value, "f"))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):  # nested inside a list or an object
        return _cell(value)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON: {value!r}")


def encode(rows: list[dict[str, Any]], wrap: str | None = None) -> bytes:
    """The request body: a JSON list of the rows, or ``{wrap: [rows]}``."""
    try:
        body = jsontext.dumps(rows, default=_default, option=_OPTIONS)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise SinkError(f"the rows cannot be sent as JSON: {exc}") from None
    return orjson.dumps({wrap: orjson.Fragment(body)}) if wrap else body


def idempotency_key(connector: str, path: str, body: bytes) -> str:
    """SHA-256 (hex) of the scheme, the connector, the path and the exact body bytes."""
    return hashlib.sha256(b"\n".join((KEY_SCHEME, connector.encode(), path.encode(), body))).hexdigest()


def chunks(rows: list[dict[str, Any]], size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """``(offset, rows)`` pieces of at most ``size`` rows, in order: the same rows always split
    the same way, so each piece keeps its key."""
    for start in range(0, len(rows), size):
        yield start, rows[start:start + size]
