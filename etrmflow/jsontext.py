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
reads 1,024).

A lone UTF-16 surrogate escape (``"Ac\\ud800me"``: valid JSON syntax, but no Unicode character)
makes orjson refuse the whole text. ``loads(..., lone_surrogates=True)`` reads such a text
anyway (Python's reader, only once orjson has refused it: the usual page pays nothing) into
strings holding the surrogate code point, and returns every object and array that holds one,
however deep, as a ``LoneSurrogateDict`` or ``LoneSurrogateList``: the mark that lets the
engine quarantine those records without searching the strings of every page. ``dumps`` writes
a lone surrogate back as the escape it was read from (``\\ud800``), never as U+FFFD.
A leaf module: it imports nothing from etrmflow.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Self

import orjson

__all__ = ["LONE_SURROGATE_MARKS", "JsonNumber", "LoneSurrogateDict", "LoneSurrogateList", "dumps",
           "escape_lone_surrogates", "has_lone_surrogate", "loads", "pretty"]

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


def loads(data: bytes | str, *, lone_surrogates: bool = False) -> Any:
    """Decode JSON; orjson's speed unless the text may hold a number orjson would change.

    Raises ``orjson.JSONDecodeError`` (a ``ValueError``) for text that is not JSON, and a
    ``ValueError`` for text nested too deeply to be read exactly. With ``lone_surrogates``, a
    text whose only fault is a lone surrogate escape is read (see the module docstring).
    """
    try:
        value = orjson.loads(data)  # also the judge of well-formedness
    except orjson.JSONDecodeError as error:
        if not lone_surrogates:
            raise
        return _with_lone_surrogates(data, error)
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER not in raw.translate(_DIGITS_AND_POINTS):
        return value
    return _exact(raw)


_ORJSON_DEPTH = 1024
"""The deepest nesting orjson reads: the exact reader must read as deep."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's reader takes NaN and Infinity; orjson does not


def _exact(raw: bytes | str) -> Any:
    import json  # only for the rare body with a long number or a lone surrogate

    try:
        return json.loads(raw, parse_float=_read_float, parse_constant=_refuse_constant)
    except RecursionError:
        pass
    # Python's reader counts each level against the recursion limit (1,000 by default, less the
    # caller's frames): raised for this one read, by what orjson itself allows.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _ORJSON_DEPTH + 100)
    try:
        return json.loads(raw, parse_float=_read_float, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"the JSON is nested deeper than {_ORJSON_DEPTH} levels of arrays or objects") from None
    finally:
        sys.setrecursionlimit(limit)


_LONE = re.compile("([\ud800-\udfff])")
"""A surrogate code point in a Python string: always a lone one (Python's reader makes a valid
pair one character), captured so that ``split`` keeps it."""
_LONE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""The escape of a surrogate in JSON text: the test before a refused text is read again."""


class LoneSurrogateDict(dict[str, Any]):
    """A JSON object that holds a string with a lone surrogate (a key or a value, at any depth)."""

    __slots__ = ()


class LoneSurrogateList(list[Any]):
    """A JSON array that holds a string with a lone surrogate (at any depth)."""

    __slots__ = ()


LONE_SURROGATE_MARKS = frozenset({LoneSurrogateDict, LoneSurrogateList})
"""The types ``loads`` gives what holds a lone surrogate: ``type(record) in LONE_SURROGATE_MARKS``."""


def has_lone_surrogate(text: str) -> bool:
    return _LONE.search(text) is not None


def escape_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as its JSON escape (``\\ud800``): printable,
    and writable as UTF-8, for messages, pointers and tables."""
    return _LONE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _with_lone_surrogates(data: bytes | str, error: orjson.JSONDecodeError) -> Any:
    """``data`` read by Python's reader when its only fault is a lone surrogate escape; else
    orjson's ``error``, as for any text that is not JSON (bytes that are not UTF-8 included)."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        raw = text.encode()  # strict both ways: a raw (unescaped) surrogate is not UTF-8
    except UnicodeError:
        raise error from None
    if _LONE_ESCAPE.search(raw) is None:
        raise error
    try:
        value = _exact(text)  # numbers exactly as sent; NaN and Infinity refused as orjson does
    except ValueError:
        raise error from None
    marked, flawed = _marked(value)
    if not flawed:  # orjson refused it for another reason
        raise error
    return marked


def _marked(value: Any) -> tuple[Any, bool]:
    """``value`` with each object and array that holds a lone surrogate replaced by its marked
    twin, and whether it holds one. A stack of its own: any depth orjson reads."""
    if isinstance(value, str):
        return value, has_lone_surrogate(value)
    if not isinstance(value, (dict, list)):
        return value, False
    holder = [value]
    # [container, its parent, its slot in the parent, the rest of its items, holds one]
    stack: list[list[Any]] = [[value, holder, 0, _items(value), False]]
    while stack:
        frame = stack[-1]
        for slot, item in frame[3]:
            if isinstance(slot, str) and has_lone_surrogate(slot):
                frame[4] = True
            if isinstance(item, (dict, list)):
                stack.append([item, frame[0], slot, _items(item), False])
                break
            if isinstance(item, str) and has_lone_surrogate(item):
                frame[4] = True
        else:
            stack.pop()
            container, parent, slot, _, flawed = frame
            if flawed:
                kind = LoneSurrogateDict if isinstance(container, dict) else LoneSurrogateList
                parent[slot] = kind(container)  # its items are final: children are done first
                if stack:
                    stack[-1][4] = True
    return holder[0], type(holder[0]) in LONE_SURROGATE_MARKS


def _items(container: dict[str, Any] | list[Any]) -> Any:
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def dumps(value: Any, *, option: int = 0, default: Callable[[Any], Any] | None = None) -> bytes:
    """``orjson.dumps`` that writes a ``JsonNumber`` as its text, any integer exactly and a
    lone surrogate as its escape.

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
        if not any(reason in str(error) for reason in _WRITTEN_BY_HAND):
            raise
        return _written_by_hand(value, fallback, option)


_WRITTEN_BY_HAND = ("64-bit", "Recursion limit", "surrogates")
"""What orjson refuses to write (its error messages say so) and ``_written_by_hand`` writes."""


def _string(text: str) -> bytes:
    """A string as orjson writes it; a lone surrogate in it as its ``\\u`` escape."""
    try:
        return orjson.dumps(text)
    except TypeError:  # "str is not valid UTF-8: surrogates not allowed"
        parts = _LONE.split(text)  # text, surrogate, text, surrogate, ..., text
        return b'"' + b"".join(f"\\u{ord(part):04x}".encode() if odd else orjson.dumps(part)[1:-1]
                               for odd, part in zip(itertools.cycle((False, True)), parts)) + b'"'


def pretty(value: Any) -> str:
    """Indented JSON for people (``dlq show``, ``lineage --format json``): every digit as sent;
    what JSON has no type for (a Decimal, a date) as its text."""
    return dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


_END = object()


def _written_by_hand(value: Any, fallback: Callable[[Any], Any], option: int) -> bytes:
    """What orjson refuses to write: an integer beyond 64 bits, a value nested deeper than its
    254 levels (orjson reads 1,024), a string with a lone surrogate. The same bytes as orjson's
    (indented too, with ``OPT_INDENT_2``), built with a stack of its own so that no depth
    exhausts Python's; orjson writes every other scalar."""
    scalar_option = option & ~(orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS)
    sort = bool(option & orjson.OPT_SORT_KEYS)
    indent = bool(option & orjson.OPT_INDENT_2)
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
        elif isinstance(item, str):
            out.extend(_string(item))
        else:
            out.extend(orjson.dumps(item, default=fallback, option=scalar_option))

    def new_line() -> None:
        if indent:
            out.extend(b"\n" + b"  " * len(open_containers))

    write(value)
    while open_containers:
        container = open_containers[-1]
        item = next(container[0], _END)
        if item is _END:
            open_containers.pop()
            if not container[2]:  # an empty one stays {} or []
                new_line()
            out.extend(b"}" if container[1] else b"]")
            continue
        if not container[2]:
            out.extend(b",")
        container[2] = False
        new_line()
        if container[1]:
            key, item = item
            if not isinstance(key, str):
                raise TypeError(f"Dict key must be str, not {type(key).__name__}")
            out.extend(_string(key) + (b": " if indent else b":"))
        write(item)
    if option & orjson.OPT_APPEND_NEWLINE:
        out.extend(b"\n")
    return bytes(out)
