"""The small JSONPath subset used to find records and cursors in a response body.

``$`` (the body), ``$.a.b``, ``$.a[0]``, ``$['odd key']``. Compiled once to a tuple of steps.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")

MISSING: Any = object()


class JsonPathError(ValueError):
    pass


def compile_path(path: str) -> tuple[str | int, ...]:
    if not path.startswith("$"):
        raise JsonPathError(f"JSON path {path!r} must start with '$' (e.g. $.data.items)")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _TOKEN.match(path, position)
        if not match:
            raise JsonPathError(f"JSON path {path!r}: cannot read {path[position:]!r} "
                                f"(supported: $.key, $.key[0], $['key'])")
        name, index, quoted1, quoted2 = match.groups()
        steps.append(int(index) if index is not None else (name or quoted1 or quoted2 or ""))
        position = match.end()
    return tuple(steps)


def extract(body: Any, steps: tuple[str | int, ...]) -> Any:
    """The value at the path, or MISSING."""
    value = body
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return MISSING
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                return MISSING
            value = value[step]
    return value
