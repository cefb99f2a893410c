"""Records that hold a lone UTF-16 surrogate: quarantined with the field named, never loaded.

A vendor may write ``"Ac\\ud800me"``: valid JSON syntax, but ``\\ud800`` alone (half of a
surrogate pair) is no Unicode character, so no table, file or message can hold the string as
sent. ``etrmflow.jsontext`` reads such a page anyway and marks every object and array that holds
one (``LONE_SURROGATE_MARKS``); only a page with a mark is searched here, so the usual page
costs one type test per record. The other records of the page load as usual, and the dead
letter keeps the record as sent (the escape written back as ``\\ud800``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from etrmflow.components import Violation
from etrmflow.jsontext import (
    LONE_SURROGATE_MARKS,
    LoneSurrogateList,
    escape_lone_surrogates,
    has_lone_surrogate,
)

UNICODE_KEYWORD = "x-etrmflow-unicode"
_ADVICE = ("valid JSON syntax but no Unicode character, so it cannot be stored as sent (kept here as "
           "the vendor wrote it); the vendor should send the whole character (the character itself, "
           "or both halves of its surrogate pair, e.g. \\ud83d\\ude00) or drop the stray escape")


def refuse_lone_surrogates(records: list[Any], verdicts: list[list[Violation]]) -> None:
    """Add an ``x-etrmflow-unicode`` violation for each string (key or value, at any depth)
    with a lone surrogate, and write the record's other violations printably (a validator's
    message or pointer may quote the string)."""
    if type(records) is not LoneSurrogateList and LONE_SURROGATE_MARKS.isdisjoint(map(type, records)):
        return  # orjson read the page (or the letters): no string in it can hold one
    for row, record in enumerate(records):
        found = list(lone_surrogates(record))
        if found:
            verdicts[row] = [_printable(v) for v in verdicts[row]] + [_violation(*where) for where in found]


def lone_surrogates(value: Any) -> Iterator[tuple[str, bool, str]]:
    """``(pointer, is a key, the string)`` for each string with a lone surrogate, in document
    order; a key's pointer names its member. A stack of its own: any depth the reader allows."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        pointer, item = stack.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                yield pointer, False, item
            continue
        if isinstance(item, dict):
            children = [(f"{pointer}/{_token(key)}", key, child) for key, child in item.items()]
        elif isinstance(item, list):
            children = [(f"{pointer}/{index}", None, child) for index, child in enumerate(item)]
        else:
            continue
        for where, key, _ in children:
            if isinstance(key, str) and has_lone_surrogate(key):
                yield where, True, key
        stack.extend((where, child) for where, _, child in reversed(children))


def _token(key: Any) -> str:
    return escape_lone_surrogates(str(key).replace("~", "~0").replace("/", "~1"))


def _violation(pointer: str, is_key: bool, text: str) -> Violation:
    what = "the name of this field" if is_key else "this string"
    surrogates = ", ".join(sorted({escape_lone_surrogates(c) for c in text if has_lone_surrogate(c)}))
    return Violation(pointer=pointer, keyword=UNICODE_KEYWORD, validator="etrmflow",
                     message=f"{what} holds a lone UTF-16 surrogate escape ({surrogates}): {_ADVICE}")


def _printable(violation: Violation) -> Violation:
    pointer, message = escape_lone_surrogates(violation.pointer), escape_lone_surrogates(violation.message)
    if (pointer, message) == (violation.pointer, violation.message):
        return violation
    return dataclasses.replace(violation, pointer=pointer, message=message)


def printable_names(counts: dict[str, int]) -> dict[str, int]:
    """Field names (schema drift) with a lone surrogate written as its escape, for the run's
    summary and results (a field the vendor named ``"no\\udc00te"`` is shown as such)."""
    if not any(has_lone_surrogate(name) for name in counts):
        return counts
    printable: dict[str, int] = {}
    for name, count in counts.items():
        shown = escape_lone_surrogates(name)
        printable[shown] = printable.get(shown, 0) + count
    return printable
