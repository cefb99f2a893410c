"""JSON text read and written without changing a number.

orjson reads a number the way every fast parser does: an integer beyond 64 bits becomes the
nearest float (``18446744073709551617`` -> ``1.8446744073709552e+19``) and a number with more
significant digits than a double holds becomes the nearest double (``40.4500000000000001`` ->
``40.45``). Read that way, a vendor's price that breaks its declared scale would pass
validation and load as a different amount. So a body that may hold such a number (cheap to
tell: its digits and points have a run of 16) is read again exactly:

* an integer is a Python ``int``, however long;
* a float whose shortest ``repr`` is the same decimal as the text stays a plain ``float``, and
  so does a double printed with 17 significant digits (``40.450000000000003``: what C's
  ``%.17g``, .NET's "R" and PostgreSQL before 12 write for the double ``40.45``), which a
  vendor whose numbers are doubles means as that double;
* any other float is a ``JsonNumber``: the nearest double, still a ``float`` for arithmetic
  and plain ``number`` fields, whose ``repr`` is the vendor's text, so the exact-decimal
  check (``x-etrmflow-decimal``) sees every digit and quarantines what it cannot hold.

``dumps`` writes both back as the vendor wrote them (dead letters keep a record as sent) and,
unlike orjson, writes integers beyond 64 bits and values nested deeper than 254 levels (orjson
reads 1,024). A leaf module: it imports nothing from etrmflow.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Self

import orjson

__all__ = ["JsonNumber", "dumps", "loads", "pretty"]

_DIGITS_AND_POINTS = bytes(0x30 if chr(byte) in "0123456789." else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 16
"""After ``translate(_DIGITS_AND_POINTS)`` a number of 16 or more significant digits (an integer
beyond 64 bits has 19 or more) is a run of 16 zeros, found at memory speed: ~0.3 ms for a page
of 1,000 trades, a third of orjson's own time (Python's ``re`` takes ten times longer to scan
for it). A long run inside a string (a trade id of 16 digits) only costs the exact reading."""

_INT64 = range(-2**63, 2**64)
"""The integers orjson writes itself (it takes unsigned 64-bit ones too)."""


class JsonNumber(float):
    """A JSON number no double holds exactly: the nearest double, remembering its text."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Self:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return JsonNumber, (self.text,)

    def is_integer(self) -> bool:
        # jsonschema's "integer" asks this: 1.0000000000000000001 is not one, though its double is.
        number = Decimal(self.text)
        return number.is_finite() and number == number.to_integral_value()

    # The integer part of the text: int(12345678901234567.0) is ...567, not the double's ...568.
    def __int__(self) -> int:
        return int(Decimal(self.text))

    __trunc__ = __int__

    def __floor__(self) -> int:
        return math.floor(Decimal(self.text))

    def __ceil__(self) -> int:
        return math.ceil(Decimal(self.text))


def _read_float(text: str) -> float:
    number = float(text)
    written = Decimal(text)
    if written == Decimal(repr(number)) or written == Decimal(f"{number:.17g}"):
        return number
    return JsonNumber(text)


def loads(data: bytes | str) -> Any:
    """Decode JSON; orjson's speed unless the text may hold a number orjson would change.

    Raises ``orjson.JSONDecodeError`` (a ``ValueError``) for text that is not JSON, and a
    ``ValueError`` for text nested too deeply to be read exactly.
    """
    value = orjson.loads(data)  # also the judge of well-formedness
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER not in raw.translate(_DIGITS_AND_POINTS):
        return value
    return _exact(raw)


_ORJSON_DEPTH = 1024
"""The deepest nesting orjson reads: the exact reader must read as deep."""


def _exact(raw: bytes) -> Any:
    import json  # only for the rare body with a long number

    try:
        return json.loads(raw, parse_float=_read_float)
    except RecursionError:
        pass
    # Python's reader counts each level against the recursion limit (1,000 by default, less the
    # caller's frames): raised for this one read, by what orjson itself allows.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _ORJSON_DEPTH + 100)
    try:
        return json.loads(raw, parse_float=_read_float)
    except RecursionError:
        raise ValueError(f"the JSON is nested deeper than {_ORJSON_DEPTH} levels of arrays or objects") from None
    finally:
        sys.setrecursionlimit(limit)


def dumps(value: Any, *, option: int = 0, default: Callable[[Any], Any] | None = None) -> bytes:
    """``orjson.dumps`` that writes a ``JsonNumber`` as its text and any integer exactly.

    ``default`` is asked, as with orjson, about any other type orjson cannot write.
    """
    def fallback(item: Any) -> Any:
        if isinstance(item, JsonNumber):
            return orjson.Fragment(item.text)
        if default is None:
            raise TypeError(f"Type is not JSON serializable: {type(item).__name__}")
        return default(item)

    try:
        return orjson.dumps(value, default=fallback, option=option)
    except TypeError as error:  # orjson's JSONEncodeError
        if "64-bit" not in str(error) and "Recursion limit" not in str(error):
            raise
        return _written_by_hand(value, fallback, option)


def pretty(value: Any) -> str:
    """Indented JSON for people (``dlq show``, ``lineage --format json``): every digit as sent;
    what JSON has no type for (a Decimal, a date) as its text."""
    return dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


_END = object()


def _written_by_hand(value: Any, fallback: Callable[[Any], Any], option: int) -> bytes:
    """What orjson refuses to write: an integer beyond 64 bits, or a value nested deeper than
    its 254 levels (orjson reads 1,024). The same bytes as orjson's, compact (an indent is not
    kept), built with a stack of its own so that no depth exhausts Python's; orjson writes
    every scalar."""
    scalar_option = option & ~(orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS)
    sort = bool(option & orjson.OPT_SORT_KEYS)
    out = bytearray()
    open_containers: list[list[Any]] = []  # [the rest of its items, is an object, no item yet]

    def write(item: Any) -> None:
        if isinstance(item, dict):
            out.extend(b"{")
            open_containers.append([iter(sorted(item.items()) if sort else item.items()), True, True])
        elif isinstance(item, (list, tuple)):
            out.extend(b"[")
            open_containers.append([iter(item), False, True])
        elif isinstance(item, int) and not isinstance(item, bool) and item not in _INT64:
            out.extend(str(int(item)).encode())
        else:
            out.extend(orjson.dumps(item, default=fallback, option=scalar_option))

    write(value)
    while open_containers:
        container = open_containers[-1]
        item = next(container[0], _END)
        if item is _END:
            open_containers.pop()
            out.extend(b"}" if container[1] else b"]")
            continue
        if not container[2]:
            out.extend(b",")
        container[2] = False
        if container[1]:
            key, item = item
            if not isinstance(key, str):
                raise TypeError(f"Dict key must be str, not {type(key).__name__}")
            out.extend(orjson.dumps(key) + b":")
        write(item)
    if option & orjson.OPT_APPEND_NEWLINE:
        out.extend(b"\n")
    return bytes(out)
