"""Declared money (``Decimal``) and vendors' long numbers (``JsonNumber``) in column expressions.

pandas combines an object column cell by cell with Python's own operators: they compare a
Decimal with a float's *binary* value (``Decimal('40.45') >= 40.45`` is False, so a filter
``price >= 40.45`` dropped the row priced 40.45) and refuse to add them; a JsonNumber takes
part as its double. Over records (``etrmflow.expr.values``) a float meets a Decimal by its
shortest repr and a JsonNumber counts by its text. ``combine`` gives columns those semantics:
pandas's own operation where it is exact (Decimals with Decimals and ints, or with a float
literal turned into the Decimal of its repr: C loops), the record operators cell by cell
otherwise (a float column times a Decimal column, long numbers, empty cells).
"""

from __future__ import annotations

import ast
import math
from decimal import Decimal
from typing import Any

import numpy as np

from etrmflow.expr.values import BinaryFn, exact, is_present
from etrmflow.jsontext import JsonNumber

_EXACT = frozenset({Decimal, JsonNumber})
_INEXACT = frozenset({float, JsonNumber})
"""Kinds pandas would combine with a Decimal wrongly, or not at all."""


def kinds(value: Any) -> frozenset[type]:
    """The Python types of a scalar, or of a column's cells (``float`` for a float64 column)."""
    import pandas as pd

    if not isinstance(value, pd.Series):
        return frozenset({type(value)})
    if value.dtype != object:
        return frozenset({float}) if value.dtype.kind == "f" else frozenset({object})
    return frozenset(map(type, value.tolist()))


Kinds = tuple[frozenset[type], frozenset[type]]


def involved(a: Any, b: Any) -> Kinds | None:
    """The kinds of ``a`` and of ``b`` when a Decimal or a long number takes part, else None
    (text never does: skip looking)."""
    if isinstance(a, str) or isinstance(b, str):
        return None
    found = kinds(a), kinds(b)
    return found if (found[0] | found[1]) & _EXACT else None


def _literal(value: Any) -> Any:
    """A float or long-number scalar as the Decimal it was written as."""
    if type(value) is float and math.isfinite(value):
        return Decimal(repr(value))
    return exact(value)


def combine(op: BinaryFn, a: Any, b: Any, missing: Any, found: Kinds) -> Any:
    """``op`` over columns where a Decimal or a long number takes part (``found``: what
    ``involved`` said); ``missing`` for an empty cell (None for arithmetic, False for a
    comparison, True for ``!=``)."""
    import pandas as pd

    if not isinstance(a, pd.Series):  # a literal becomes the Decimal it was written as
        a = _literal(a)
        found = frozenset({type(a)}), found[1]
    if not isinstance(b, pd.Series):
        b = _literal(b)
        found = found[0], frozenset({type(b)})
    if not (found[0] | found[1]) & _INEXACT:
        try:
            return op(a, b)  # Decimals with Decimals and ints: pandas is exact, and fast
        except TypeError:  # an empty cell (None) in an object column
            pass
    return pairs(op, a, b, missing)


def member(column: Any, items: list[Any], negate: bool, scalar: BinaryFn, found: Kinds) -> Any:
    """``column in items`` for a column of Decimals or long numbers (``found``: its kinds)."""
    if JsonNumber in found[0]:
        return pairs(scalar, column, items, negate)
    found = column.isin([_literal(item) for item in items])  # Decimals hash as the numbers they are
    return ~found if negate else found


def pairs(op: BinaryFn, a: Any, b: Any, missing: Any) -> Any:
    """``op`` on each pair of cells, as over records; ``missing`` where either is empty."""
    import pandas as pd

    series = a if isinstance(a, pd.Series) else b
    left = a.tolist() if isinstance(a, pd.Series) else [a] * len(series)
    right = b.tolist() if isinstance(b, pd.Series) else [b] * len(series)
    values = [missing if _empty(x) or _empty(y) else op(x, y) for x, y in zip(left, right)]
    return pd.Series(values, index=series.index, dtype=bool if isinstance(missing, bool) else object)


def _empty(value: Any) -> bool:
    """An empty cell: None, MISSING, NaN (float or Decimal), pandas' NA or NaT."""
    if not is_present(value):
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, Decimal):
        return value.is_nan()
    return type(value).__name__ in ("NAType", "NaTType")


_REFUSED_ON_TEXT = (ast.Mult, ast.Mod, ast.Pow)
"""Operators that repeat or format text (``name * 10**9``, ``'%999999999d' % x``) or raise an
integer without bound when pandas applies Python's operator to each cell of an object column."""
_MAY_WRAP = (ast.Add, ast.Sub, ast.Mult, ast.Pow)


def guarded(op: BinaryFn, symbol: type, a: Any, b: Any) -> Any:
    """``op`` (the record operator of ``symbol``) on columns with no Decimal: pandas's own
    operation, unless it would differ from the records' silently. Text and Python objects go
    cell by cell through the record operator (which refuses repetition and huge integers), and
    so does an integer column whose int64 result wrapped around (``volume ** 30``)."""
    if issubclass(symbol, _REFUSED_ON_TEXT) and (_objects(a) or _objects(b)):
        return pairs(op, a, b, None)
    result = op(a, b)
    if issubclass(symbol, _MAY_WRAP) and _wrapped(op, a, b, result):
        return pairs(op, a, b, None)
    return result


def _objects(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and dtype.kind not in "biuf"


def _wrapped(op: BinaryFn, a: Any, b: Any, result: Any) -> bool:
    """Whether an int64 result overflowed: the same operation in floats leaves the int64 range."""
    if getattr(result, "dtype", None) is None or result.dtype.kind not in "iu":
        return False
    with np.errstate(all="ignore"):
        approximate = op(_floats(a), _floats(b))
    return bool((approximate.abs() >= 2.0 ** 63).any())


def _floats(value: Any) -> Any:
    return value.astype("float64") if hasattr(value, "astype") else float(value)
