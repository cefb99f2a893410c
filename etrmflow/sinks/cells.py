"""Cells and columns as a database driver or file writer takes them: Python scalars, None for
missing, nested values as JSON text, declared money as exact decimals.

A sink converts every cell of every batch, so the column functions here work a column at a
time: plain numpy and string columns convert in C, timestamps are formatted vectorised, and
declared decimals are remembered by value (prices repeat). Each gives exactly what the cell by
cell definition (``plain_value``, ``decimal_cell``) gives; tests/test_sink_cells.py checks it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import TYPE_CHECKING, Any

import orjson

from etrmflow import jsontext
from etrmflow.validation.decimals import DecimalSpec, decimal_problem, to_decimal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_SCALAR_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
_PLAIN_TYPES = frozenset({str, int, bool})
"""Cells ``plain_value`` returns unchanged (exact types: a subclass may be a numpy scalar)."""
_MEMO_LIMIT = 8_192
_ISO_TEXTS: dict[tuple[str, Any], dict[int, str]] = {}
"""Timestamp texts by instant (int64 ticks), per column type: its text (the unit) and its time
zone object, since the text names a zone by name alone (two zones may share one)."""
_ZONES_LIMIT = 64
_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_FIRST_SECOND = -62135596800  # 0001-01-01T00:00:00, the first instant a datetime can show
_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59


def exact_float(value: decimal.Decimal) -> float:
    """The float equal to ``value``; refuses (ValueError) rather than round money silently."""
    number = float(value)
    if not value.is_finite() or decimal.Decimal(repr(number)) != value:
        raise ValueError(f"decimal {value} cannot be stored as a float without rounding; "
                         f"the column is a float column (made before the field was declared money, or "
                         f"typed from floats): declare it with x-etrmflow-decimal in the contract, and "
                         f"move the existing table or folder aside so that it is made again with an "
                         f"exact type")
    return number


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return _json_number(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def _json_number(value: decimal.Decimal) -> Any:
    """A JSON number either way: the float where it is the same value (40.50 as 40.5), else
    the digits (nested money longer than a double holds: 1234567890123456.78)."""
    if not value.is_finite():
        raise ValueError(f"decimal {value} is not a finite number; JSON has no way to store it")
    number = float(value)
    return number if decimal.Decimal(repr(number)) == value else orjson.Fragment(format(value, "f"))


def dumps_json(value: Any) -> str:
    """Compact JSON with sorted keys, so that equal values always give equal text."""
    return jsontext.dumps(value, default=_json_default, option=_SCALAR_JSON_OPTIONS).decode()


def is_missing(value: Any) -> bool:
    """None, NaN, pandas NA or NaT (never true for a list or dict, even an empty one)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    # By name, so this hot path needs no pandas import: pd.NA and pd.NaT are singletons.
    return type(value).__name__ in ("NAType", "NaTType")


def plain_value(value: Any) -> Any:
    """One cell as a Python scalar a database driver or CSV writer takes (None for missing)."""
    if is_missing(value):
        return None
    if isinstance(value, (list, dict, tuple)):
        return dumps_json(value)
    if isinstance(value, decimal.Decimal):
        return exact_float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else value


def plain_values(values: list[Any]) -> list[Any]:
    """``plain_value`` of each cell; strings and integers, most of any column, pass as they are."""
    return [value if type(value) in _PLAIN_TYPES else plain_value(value) for value in values]


def json_values(values: list[Any]) -> list[str | None]:
    """Each non-missing cell as JSON text (``dumps_json``), None for a missing one."""
    return [dumps_json(v) if type(v) in (list, dict) or not is_missing(v) else None for v in values]


def column_values(series: pd.Series, *, as_json: bool = False) -> list[Any]:
    """A column as a list of Python scalars, None for every missing value: ``plain_value`` of
    each cell (``as_json``: JSON text of each non-missing cell), computed column-wise.

    Plain numpy numbers and strings convert in C, timestamps are formatted vectorised; only
    object and unusual extension columns are looked at cell by cell.
    """
    import numpy as np
    import pandas as pd

    if as_json:
        return json_values(series.tolist())
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        kind = dtype.kind
        if kind in "biu":
            return series.tolist()  # Python ints and bools, never missing
        if kind == "f":
            array = series.to_numpy()
            values = array.tolist()
            return [None if math.isnan(v) else v for v in values] if np.isnan(array).any() else values
        if kind == "O":
            return plain_values(series.tolist())
        if kind == "M":
            return iso_texts(series)
    elif isinstance(dtype, pd.DatetimeTZDtype):
        return iso_texts(series)
    elif isinstance(dtype, pd.StringDtype):  # str or missing, whatever the storage
        return series.to_numpy(dtype=object, na_value=None).tolist()
    return [plain_value(v) for v in series.tolist()]


# ---------------------------------------------------------------------------------------------
# Timestamps: ``Timestamp.isoformat()`` of a whole column at once
# ---------------------------------------------------------------------------------------------

def iso_texts(series: pd.Series) -> list[str | None]:
    """``plain_value`` of each cell of a datetime64 column (naive or with a time zone):
    ``isoformat()``, ``2025-03-30T00:00:00+01:00``, None for NaT.

    Texts are remembered by instant per column type (delivery periods repeat from page to page);
    the others are formatted vectorised, each distinct instant once.
    """
    import numpy as np

    memo = _iso_memo(series.dtype)
    ticks = np.asarray(series.array.asi8).tolist()
    texts = list(map(memo.get, ticks))
    unknown = [k for k, text in enumerate(texts) if text is None]
    if unknown:
        found = _iso_each(series.iloc[unknown] if len(unknown) < len(texts) else series)
        if len(memo) + len(found) > _MEMO_LIMIT:
            memo.clear()
        for k, text in zip(unknown, found):
            texts[k] = text
            if text is not None:
                memo[ticks[k]] = text
    return texts


def _iso_memo(dtype: Any) -> dict[int, str]:
    """The texts remembered for columns of this type; a zone that cannot be hashed gets an
    empty memo of its own (nothing is remembered), and the number of zones is bounded too."""
    key = (str(dtype), getattr(dtype, "tz", None))
    try:
        memo = _ISO_TEXTS.get(key)
    except TypeError:  # a tzinfo with __eq__ but no __hash__
        return {}
    if memo is None:
        if len(_ISO_TEXTS) >= _ZONES_LIMIT:
            _ISO_TEXTS.clear()
        memo = _ISO_TEXTS[key] = {}
    return memo


def _iso_each(series: pd.Series) -> list[str | None]:
    import numpy as np
    import pandas as pd

    codes, distinct = pd.factorize(series)  # NaT: code -1, the None appended last
    texts = _iso_distinct(pd.Series(distinct)) if len(distinct) else []
    return np.array([*texts, None], dtype=object)[codes].tolist()


def _iso_distinct(series: pd.Series) -> list[str]:
    import numpy as np

    per_second = _TICKS_PER_SECOND.get(series.dt.unit)
    if per_second is None:
        return [v.isoformat() for v in series.tolist()]
    aware = getattr(series.dtype, "tz", None) is not None
    wall = np.asarray(series.dt.tz_localize(None) if aware else series).view("i8")
    fraction = np.mod(wall, per_second)
    seconds = (wall - fraction) // per_second
    odd = (seconds < _FIRST_SECOND) | (seconds > _LAST_SECOND)
    seconds[odd] = 0
    texts = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").tolist()
    if fraction.any():
        _add_fractions(texts, fraction * (10**9 // per_second))
    if aware:
        offsets = wall - np.asarray(series.array.asi8)
        odd |= np.mod(offsets, per_second) != 0
        texts = _with_offsets(texts, np.where(odd, 0, offsets // per_second))
    for k in np.flatnonzero(odd).tolist():  # what a datetime cannot show: asked one by one
        texts[k] = series.iloc[k].isoformat()
    return texts


def _add_fractions(texts: list[Any], nanoseconds: np.ndarray) -> None:
    """Fractions of a second: six digits, or nine when there are nanoseconds (as
    ``Timestamp.isoformat`` writes them)."""
    import numpy as np

    for k in np.flatnonzero(nanoseconds).tolist():
        ns = int(nanoseconds[k])
        texts[k] += f".{ns:09d}" if ns % 1000 else f".{ns // 1000:06d}"


def _with_offsets(texts: list[Any], offsets: np.ndarray) -> list[Any]:
    import numpy as np

    distinct, which = np.unique(offsets, return_inverse=True)
    shown = [_offset_text(int(seconds)) for seconds in distinct.tolist()]
    return [text + shown[index] for text, index in zip(texts, which.tolist())]


def _offset_text(seconds: int) -> str:
    """A UTC offset as ``isoformat`` writes it: ``+01:00``, or ``+00:19:32`` with seconds."""
    zone = dt.timezone(dt.timedelta(seconds=seconds))
    return dt.datetime(2000, 1, 1, tzinfo=zone).isoformat()[19:]


# ---------------------------------------------------------------------------------------------
# Declared decimals (x-etrmflow-decimal): stored exactly, or the write fails
# ---------------------------------------------------------------------------------------------

def decimal_cell(value: Any, spec: DecimalSpec) -> decimal.Decimal | None:
    """A value of a declared decimal column as a Decimal at the declared scale (None if
    missing). Raises ValueError rather than round: a value with more decimals than the scale
    (a transform may have computed one), or a float of more than 15 significant digits;
    TypeError for a value that is no number."""
    if is_missing(value):
        return None
    item = getattr(value, "item", None)  # numpy scalars, from a transform
    value = item() if callable(item) else value
    if isinstance(value, bool) or not isinstance(value, (decimal.Decimal, int, float)):
        raise TypeError(f"{value!r} is not a number, and the contract declares a decimal"
                         f"({spec.precision},{spec.scale}) column")
    problem = decimal_problem(value, spec)
    if problem:
        raise ValueError(f"{problem}; refusing to round money")
    return to_decimal(value, spec)


def decimal_text(value: decimal.Decimal | None) -> str | None:
    """Plain positional digits, never an exponent: Decimal('1E+2') at scale 2 is '100.00'."""
    return None if value is None else format(value, "f")


class _Remembered:
    """Results of ``decimal_cell`` by exact type and value, for one spec.

    What ``decimal_cell`` gives for a float, an int or a Decimal depends on the number alone,
    but for its sign when it is zero (-0.0 gives Decimal('-0.00')): zeros, and anything not
    finite, are never remembered. Equal Decimals of different exponents (40.5, 40.50) do share
    an entry: quantized to the scale, they give the same Decimal.
    """

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: dict[type, dict[Any, decimal.Decimal]] = {float: {}, int: {}, decimal.Decimal: {}}


_REMEMBERED: dict[DecimalSpec, _Remembered] = {}


def _remembered(spec: DecimalSpec) -> dict[type, dict[Any, decimal.Decimal]]:
    found = _REMEMBERED.get(spec)
    if found is None:
        found = _REMEMBERED[spec] = _Remembered()
    return found.cells


def _cell(value: Any, spec: DecimalSpec, memo: dict[type, dict[Any, decimal.Decimal]]) -> decimal.Decimal | None:
    """``decimal_cell``, remembered for floats, ints and Decimals."""
    kind = type(value)
    known = memo.get(kind)
    if known is None or (kind is decimal.Decimal and not value.is_finite()):  # sNaN has no hash
        return decimal_cell(value, spec)
    cell = known.get(value)
    if cell is None:
        cell = decimal_cell(value, spec)
        if cell is not None and value:  # never a zero: its sign matters
            if len(known) >= _MEMO_LIMIT:
                known.clear()
            known[value] = cell
    return cell


def _text_at_scale(value: decimal.Decimal, spec: DecimalSpec) -> str | None:
    """The text of a Decimal that ``decimal_cell`` returns as it is (finite, exactly ``scale``
    decimals, within the precision: what the engine makes of a validated value); else None.

    ``str`` writes such a value positionally, with ``scale`` digits after the point (a value
    with another exponent has the point elsewhere, or an exponent marker).
    """
    scale = spec.scale
    if not scale or not value.is_finite() or value.adjusted() >= spec.integer_digits:
        return None
    text = str(value)
    return text if text[-scale - 1:-scale] == "." and "E" not in text else None


def decimal_cells(series: pd.Series, spec: DecimalSpec) -> list[decimal.Decimal | None]:
    """``decimal_cell`` of each cell of a column (the first bad cell raises as it would)."""
    memo = _remembered(spec)
    return [value if type(value) is decimal.Decimal and _text_at_scale(value, spec) is not None
            else _cell(value, spec, memo) for value in series.tolist()]


def decimal_texts(series: pd.Series, spec: DecimalSpec) -> list[str | None]:
    """``decimal_text(decimal_cell(cell))`` of each cell of a column."""
    memo = _remembered(spec)
    out: list[str | None] = []
    append = out.append
    for value in series.tolist():
        text = _text_at_scale(value, spec) if type(value) is decimal.Decimal else None
        if text is None:
            cell = _cell(value, spec, memo)
            text = None if cell is None else format(cell, "f")
        append(text)
    return out


__all__ = [
    "column_values",
    "decimal_cell",
    "decimal_cells",
    "decimal_text",
    "decimal_texts",
    "dumps_json",
    "exact_float",
    "is_missing",
    "iso_texts",
    "json_values",
    "plain_value",
    "plain_values",
]
