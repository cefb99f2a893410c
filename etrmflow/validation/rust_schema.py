"""The schema as jsonschema-rs checks it (``RustSchema``), and which patterns it may check."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

try:
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse  # type: ignore[no-redef]

from etrmflow.validation.located import VALUE_KEYWORDS

Location = tuple[Any, ...]
"""Keys from the schema's root to a subschema (what jsonschema-rs reports as schema_path)."""


# Plain regular syntax that Python and Rust read alike: literals, classes of literals and
# ranges, repeats, groups, alternation, "." and the anchors ^ and $. On a string either engine
# matches it identically, except that Python's $ also matches before a final newline: Rust is
# stricter there, which makes a suspect that jsonschema's own re.search then clears.
_PLAIN_OPS = {"LITERAL", "NOT_LITERAL", "IN", "MAX_REPEAT", "MIN_REPEAT", "SUBPATTERN", "BRANCH",
              "ANY", "AT"}
_CLASS_ITEMS = {"LITERAL", "RANGE", "NEGATE"}
# Text Rust reads differently: nested classes and set operations inside [...], escapes of
# letters or digits (\b, \0, \u...), "{,n}", and groups other than (...) and (?:...).
_RUST_DIALECT = re.compile(r"\[[^\]]*(\[|&&|--|~~)|\\[A-Za-z0-9]|\{,|\(\?(?!:)")


def plain_pattern(pattern: Any) -> bool:
    """True if jsonschema-rs may check this ``pattern`` (see the comment above)."""
    if not isinstance(pattern, str) or _RUST_DIALECT.search(pattern):
        return False
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return parsed.state.flags & ~re.UNICODE == 0 and _plain(parsed)


def _plain(items: Any) -> bool:
    for op, arg in items:
        name = str(op)
        if name not in _PLAIN_OPS:
            return False
        if name == "AT" and str(arg) not in ("AT_BEGINNING", "AT_END"):
            return False
        if name == "IN" and not all(str(item_op) in _CLASS_ITEMS for item_op, _ in arg):
            return False
        if name in ("MAX_REPEAT", "MIN_REPEAT") and not _plain(arg[2]):
            return False
        if name == "SUBPATTERN" and (arg[1] or arg[2] or not _plain(arg[3])):
            return False
        if name == "BRANCH" and not all(_plain(branch) for branch in arg[1]):
            return False
    return True


class RustSchema:
    """The schema as jsonschema-rs gets it: value keywords removed (plain patterns stay), and
    each ``format`` with an accelerator gets it appended to its ``allOf``.

    An accelerator is a subschema of one keyword that accepts only valid values of the format
    (a date-time regex without Feb 29, say): values it accepts need no Python check, and a
    value it rejects becomes a ``format`` suspect for jsonschema to judge. ``accelerated`` maps
    the location of each appended subschema to the original subschema holding the format.

    A closed object (``additionalProperties: false``, every required key a property, at most
    two optional ones) trades its ``required`` for key counts: jsonschema-rs looks each
    required key up anew in every object, but counts keys for free. Once rs has found no
    unexpected key, an object has every required key exactly when it has ``len(required)``
    keys plus one for each optional key it has: ``minProperties``, raised by
    ``if: {required: [optional]}``. ``required_of`` maps the location of each such count to the
    object's ``required``: its failure is a ``required`` suspect, as is an unexpected key
    (``closed``: it spoils the count).
    """

    def __init__(self, schema: Mapping[str, Any], accelerators: Mapping[str, Mapping[str, Any]],
                 formats: frozenset[int] = frozenset()) -> None:
        self._accelerators = accelerators
        self._formats = formats  # ids of the subschemas whose format may be accelerated
        self.accelerated: dict[Location, Mapping[str, Any]] = {}
        self.required_of: dict[Location, Location] = {}
        self.closed: set[Location] = set()
        self.schema = self._copy(schema, ())

    def _copy(self, node: Any, location: Location) -> Any:
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in VALUE_KEYWORDS and not (key == "pattern" and plain_pattern(value)):
                continue
            if key in ("properties", "$defs") and isinstance(value, Mapping):
                out[key] = {name: self._copy(sub, (*location, key, name)) for name, sub in value.items()}
            elif key == "allOf" and isinstance(value, list):
                out[key] = [self._copy(sub, (*location, key, i)) for i, sub in enumerate(value)]
            elif key in ("items", "additionalProperties"):
                out[key] = self._copy(value, (*location, key))
            else:
                out[key] = value
        if _closed(node):
            self._count_required(out, node, location)
        accelerator = self._accelerators.get(node["format"]) \
            if id(node) in self._formats and isinstance(node.get("format"), str) else None
        if accelerator is not None:
            out["allOf"] = [*out.get("allOf", ()), dict(accelerator)]
            self.accelerated[(*location, "allOf", len(out["allOf"]) - 1)] = node
        return out

    def _count_required(self, out: dict[str, Any], node: Mapping[str, Any], location: Location) -> None:
        required = node["required"]
        optional = [key for key in node["properties"] if key not in required]
        rules = [{"if": {"required": list(keys)}, "then": {"minProperties": len(required) + size}}
                 for size in range(len(optional), 0, -1)  # every non-empty subset
                 for keys in itertools.combinations(optional, size)]
        del out["required"]
        out["minProperties"] = len(required)
        if rules:
            out["allOf"] = rules
        counts = [(*location, "minProperties"), *((*location, "allOf", i, "then", "minProperties")
                                                  for i in range(len(rules)))]
        self.required_of.update(dict.fromkeys(counts, (*location, "required")))
        self.closed.add(location)


def _closed(node: Mapping[str, Any]) -> bool:
    required, properties = node.get("required"), node.get("properties")
    return (node.get("additionalProperties") is False and isinstance(required, list) and bool(required)
            and isinstance(properties, Mapping) and set(required) <= set(properties)
            and len(set(required)) == len(required) and len(properties) - len(required) <= 2
            and not {"$ref", "allOf", "minProperties", "maxProperties", "format"} & set(node))
