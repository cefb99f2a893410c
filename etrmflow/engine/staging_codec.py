"""How staged frames are stored in SQLite and come back unchanged.

Each column is stored by a codec chosen from its dtype, and the dtype itself is recorded, so a
frame read back has the same values and dtypes it was staged with: ``Decimal`` money as its own
text (``Decimal('40.50')`` stays ``40.50``), timezone-aware timestamps as integers in their
unit with their zone, categories as codes with their categories, nullable integers and
booleans with their missing values, nested lists and dicts as JSON. Values JSON cannot hold
(``Decimal``, timestamps, NaN, tuples...) are written as one-key objects tagged
``$etrmflow:<kind>``; a real dict that looks like a tag is wrapped, so the text is unambiguous.

Group keys get a second encoding (``key_cells``) whose SQLite order groups equal values
together and sorts numbers, text and timestamps naturally; ``sql_order`` is the same order in
Python, for steps that merge two staged streams.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd

from etrmflow import jsontext
from etrmflow.errors import TransformError
from etrmflow.jsontext import JsonNumber

TAG = "$etrmflow:"
NAT = np.iinfo(np.int64).min
"""pandas' integer for a missing timestamp (NaT)."""


class StagingError(TransformError):
    """Rows cannot be staged or read back (an unsupported dtype, a lost or broken staging file)."""


# ---------------------------------------------------------------------------------------------
# One value as tagged JSON
# ---------------------------------------------------------------------------------------------

def _tz_name(tz: Any) -> Any:
    """A zone as JSON: its IANA name, or its fixed offset in seconds."""
    if tz is None:
        return None
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)
    if name:
        return str(name)
    if tz is dt.timezone.utc:
        return "UTC"
    return {"offset": tz.utcoffset(None).total_seconds()}


def _tz_from(name: Any) -> Any:
    if isinstance(name, dict):
        return dt.timezone(dt.timedelta(seconds=name["offset"]))
    return name


def _tagged(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value if -2**63 <= value < 2**64 else {TAG + "int": str(value)}
    if isinstance(value, float):
        if type(value) is JsonNumber:  # a vendor's long number: staged with its digits
            return {TAG + "number": value.text}
        return value if np.isfinite(value) else {TAG + "float": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {TAG + "decimal": str(value)}
    if isinstance(value, list):
        return [_tagged(item) for item in value]
    if isinstance(value, dict):
        return _tagged_dict(value)
    return _tagged_other(value)


def _tagged_dict(value: dict[Any, Any]) -> Any:
    if not all(isinstance(key, str) for key in value):
        return {TAG + "pairs": [[_tagged(k), _tagged(v)] for k, v in value.items()]}
    items = {key: _tagged(item) for key, item in value.items()}
    if len(items) == 1 and next(iter(items)).startswith(TAG):
        return {TAG + "dict": items}  # a real dict that would read as a tag
    return items


def _tagged_other(value: Any) -> Any:
    if value is pd.NaT:
        return {TAG + "nat": None}
    if value is pd.NA:
        return {TAG + "na": None}
    if isinstance(value, pd.Timestamp):
        return {TAG + "timestamp": [value.isoformat(), _tz_name(value.tz)]}
    if isinstance(value, dt.datetime):
        return {TAG + "datetime": [value.isoformat(), _tz_name(value.tzinfo)]}
    if isinstance(value, dt.date):
        return {TAG + "date": value.isoformat()}
    if isinstance(value, dt.time):
        return {TAG + "time": value.isoformat()}
    if isinstance(value, pd.Timedelta):
        return {TAG + "timedelta64": value.value}
    if isinstance(value, dt.timedelta):
        return {TAG + "timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, tuple):
        return {TAG + "tuple": [_tagged(item) for item in value]}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return {TAG + "numpy": [value.dtype.str, _tagged(value.item())]}
    raise StagingError(f"cannot stage a value of type {type(value).__name__} ({value!r:.60}); "
                       f"convert the column (e.g. with a cast step) before the whole-dataset step")


def _timestamp(iso: str, zone: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(iso)
    return stamp.tz_convert(_tz_from(zone)) if zone is not None and stamp.tz is not None else stamp


def _datetime(iso: str, zone: Any) -> dt.datetime:
    value = dt.datetime.fromisoformat(iso)
    if isinstance(zone, str) and value.tzinfo is not None:
        import zoneinfo

        value = value.astimezone(dt.timezone.utc if zone == "UTC" else zoneinfo.ZoneInfo(zone))
    return value


_UNTAG: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "number": JsonNumber,
    "decimal": decimal.Decimal,
    "dict": lambda items: {key: _untagged(item) for key, item in items.items()},
    "pairs": lambda pairs: {_untagged(k): _untagged(v) for k, v in pairs},
    "nat": lambda _: pd.NaT,
    "na": lambda _: pd.NA,
    "timestamp": lambda parts: _timestamp(*parts),
    "datetime": lambda parts: _datetime(*parts),
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta64": lambda ns: pd.Timedelta(ns, unit="ns"),
    "timedelta": lambda parts: dt.timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2]),
    "tuple": lambda items: tuple(_untagged(item) for item in items),
    "numpy": lambda parts: np.dtype(parts[0]).type(_untagged(parts[1])),
}


def _untagged(value: Any) -> Any:
    if isinstance(value, list):
        return [_untagged(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            key = next(iter(value))
            if key.startswith(TAG):
                return _UNTAG[key[len(TAG):]](value[key])
        return {key: _untagged(item) for key, item in value.items()}
    return value


def dumps_tagged(value: Any) -> str:
    tagged = _tagged(value)
    try:
        return orjson.dumps(tagged).decode()
    except TypeError:  # a lone surrogate, which orjson refuses: written as its \u escape
        return jsontext.dumps(tagged).decode()


def loads_tagged(text: str) -> Any:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:  # a lone surrogate escape (dumps_tagged wrote it)
        parsed = jsontext.loads(text, lone_surrogates=True)
    return _untagged(parsed) if TAG in text else parsed  # no tag in the text: nothing to undo


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------

def dtype_spec(dtype: Any) -> dict[str, Any]:
    """A dtype as JSON-able data, precise enough to rebuild it (``dtype_from_spec``)."""
    if isinstance(dtype, np.dtype):
        return {"numpy": dtype.str}
    if isinstance(dtype, pd.DatetimeTZDtype):
        return {"datetimetz": dtype.unit, "tz": _tz_name(dtype.tz)}
    if isinstance(dtype, pd.StringDtype):
        return {"string": dtype.storage, "nan": dtype.na_value is not pd.NA}
    if isinstance(dtype, pd.CategoricalDtype):
        return {"category": dumps_tagged(dtype.categories.tolist()), "ordered": bool(dtype.ordered),
                "categories_dtype": dtype_spec(dtype.categories.dtype)}
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.name in _MASKED:
        return {"masked": dtype.name}
    raise StagingError(f"whole-dataset staging cannot store dtype {dtype}; cast the column (e.g. to "
                       f"string) before the whole-dataset step")


_MASKED = frozenset({"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
                     "Float32", "Float64", "boolean"})


def dtype_from_spec(spec: dict[str, Any]) -> Any:
    if "numpy" in spec:
        return np.dtype(spec["numpy"])
    if "datetimetz" in spec:
        return pd.DatetimeTZDtype(unit=spec["datetimetz"], tz=_tz_from(spec["tz"]))
    if "string" in spec:
        return pd.StringDtype(spec["string"], na_value=np.nan if spec["nan"] else pd.NA)
    if "category" in spec:
        categories = pd.Index(loads_tagged(spec["category"]), dtype=dtype_from_spec(spec["categories_dtype"]))
        return pd.CategoricalDtype(categories, ordered=spec["ordered"])
    return pd.api.types.pandas_dtype(spec["masked"])


# ---------------------------------------------------------------------------------------------
# Columns: (spec, SQL values) and back
# ---------------------------------------------------------------------------------------------

def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _object_codec(values: list[Any]) -> str:
    """``text``, ``decimal`` or ``json`` with missing values as NULL (``~nan``: they were NaN,
    not None); ``tagged`` when None and NaN mix, or floats are data: every value tagged."""
    kinds = set(map(type, values))
    if float in kinds and not all(math.isnan(v) for v in values if type(v) is float):
        return "tagged"
    missing = kinds & {type(None), float}
    if len(missing) == 2:
        return "tagged"
    data = kinds - missing
    base = "text" if data <= {str} else "decimal" if data == {decimal.Decimal} else "json"
    return base + ("~nan" if float in missing else "")


def column_codec(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind in "iub":
            if dtype.kind == "u" and dtype.itemsize == 8 and len(series) and series.max() >= 2**63:
                return "tagged"
            return "int"
        if dtype.kind == "f":
            return "float"
        if dtype.kind in "mM":
            return "i8"
        if dtype.kind == "O":
            return _object_codec(series.tolist())
    elif isinstance(dtype, pd.DatetimeTZDtype):
        return "i8"
    elif isinstance(dtype, pd.CategoricalDtype):
        return "codes"
    elif isinstance(dtype, pd.StringDtype):
        return "string"
    dtype_spec(dtype)  # raises for what cannot be staged
    return "masked"


_ENCODE: dict[str, Callable[[Any], Any]] = {"text": lambda v: v, "decimal": str, "json": dumps_tagged}
_DECODE: dict[str, Callable[[Any], Any]] = {"text": lambda v: v, "decimal": decimal.Decimal, "json": loads_tagged}


def encode_column(series: pd.Series, codec: str) -> list[Any]:
    """The column as SQL values (None for SQL NULL)."""
    values = series.tolist()
    if codec == "int":
        return series.astype("int64").tolist()
    if codec == "float":
        return [None if math.isnan(v) else v for v in values]
    if codec == "i8":
        return [None if v == NAT else v for v in series.array.asi8.tolist()]
    if codec == "codes":
        return [None if code < 0 else code for code in series.cat.codes.tolist()]
    if codec == "tagged":
        return [dumps_tagged(v) for v in values]
    base = codec.partition("~")[0]
    if base in _ENCODE:  # the codec guarantees that missing values are None, or NaN floats
        convert = _ENCODE[base]
        return [None if v is None or type(v) is float else convert(v) for v in values]
    if codec == "string":
        return [v if type(v) is str else None for v in values]
    return [None if _is_missing(v) else v for v in values]  # masked


def decode_column(values: list[Any], codec: str, dtype: Any) -> Any:
    """An array of ``dtype`` from the SQL values ``encode_column`` gave."""
    if codec == "int":
        return np.array(values, dtype="int64").astype(dtype)
    if codec == "float":
        return np.array([np.nan if v is None else v for v in values], dtype="float64").astype(dtype)
    if codec == "i8":
        raw = np.array([NAT if v is None else v for v in values], dtype="int64")
        if isinstance(dtype, pd.DatetimeTZDtype):
            naive = pd.Series(raw.view(f"M8[{dtype.unit}]"))
            return naive.dt.tz_localize("UTC").dt.tz_convert(dtype.tz).array
        return raw.view(dtype)
    if codec == "codes":
        return pd.Categorical.from_codes([-1 if v is None else v for v in values], dtype=dtype)
    if codec in ("string", "masked"):
        return pd.array(values, dtype=dtype)
    if codec == "tagged":
        values = [loads_tagged(v) for v in values]
        if isinstance(dtype, np.dtype) and dtype.kind != "O":
            return np.array(values, dtype=dtype)  # e.g. uint64 beyond SQLite's integers
        return object_array(values)
    base, _, marker = codec.partition("~")
    convert, missing = _DECODE[base], np.nan if marker == "nan" else None
    return object_array([missing if v is None else convert(v) for v in values])


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-d object array of ``values``, element by element: a list value must not become a
    second dimension, a Decimal stays a Decimal."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


# ---------------------------------------------------------------------------------------------
# Group keys: SQLite-sortable cells, and their order in Python
# ---------------------------------------------------------------------------------------------

def _key_cell(value: Any) -> tuple[Any, Any]:
    """(primary, tie-break): equal values give equal pairs; numbers sort before text."""
    if _is_missing(value) or (isinstance(value, decimal.Decimal) and value.is_nan()):
        return None, None
    if isinstance(value, (bool, np.bool_)):
        return int(value), None
    if isinstance(value, (int, np.integer)):
        number = int(value)
        return (number, None) if -2**63 <= number < 2**63 else (float(number), str(number))
    if isinstance(value, (float, np.floating)):
        return float(value), None
    if isinstance(value, decimal.Decimal):
        approx = float(value)
        exact = value.is_finite() and decimal.Decimal(approx) == value
        return approx, None if exact else str(value.normalize())
    if isinstance(value, str):
        return value, None
    if isinstance(value, (pd.Timestamp, dt.datetime)):  # as a datetime64 column: ns (of UTC if aware)
        return pd.Timestamp(value).as_unit("ns").value, None
    return None, dumps_tagged(value)


def key_cells(series: pd.Series) -> list[tuple[Any, Any]]:
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "mM"):
        try:  # one unit for every batch, so equal instants give equal keys
            nanoseconds = series.dt.as_unit("ns").array.asi8
        except (OverflowError, ValueError) as exc:
            raise StagingError(f"column {series.name}: a timestamp outside 1677-2262 cannot be a group key "
                               f"({exc})") from exc
        return [(None, None) if v == NAT else (v, None) for v in nanoseconds.tolist()]
    values = series.tolist()
    if isinstance(dtype, np.dtype) and (dtype.kind in "ib" or (dtype.kind == "u" and dtype.itemsize < 8)):
        return [(int(v), None) for v in values]
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return [(None, None) if math.isnan(v) else (v, None) for v in values]
    if isinstance(dtype, pd.StringDtype):  # the common case, kept cheap
        return [(v, None) if type(v) is str else (None, None) for v in values]
    return [(v, None) if type(v) is str else _key_cell(v) for v in values]


def key_rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    """Per row, the flat key ``(k0, k0 tie-break, k1, k1 tie-break, ...)`` as staged. A column
    the frame lacks (an optional field no record of the page has) is an empty key part."""
    if not columns:
        return [()] * len(frame)
    absent = [(None, None)] * len(frame)
    cells = [key_cells(frame[column]) if column in frame.columns else absent for column in columns]
    return [tuple(part for pair in row for part in pair) for row in zip(*cells)]


def _order(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, value)  # text: code point order is UTF-8 byte order, SQLite's BINARY collation


def sql_order(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    """A Python sort key that orders staged keys as SQLite's ORDER BY does."""
    return tuple(_order(part) for part in key)
