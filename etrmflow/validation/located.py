"""What a schema asks of a record, seen from the fast path.

* ``locate``: where each value-level keyword (``format``, ``pattern``, ``x-etrmflow-decimal``)
  applies, as a plain path of property names and ``*`` (every item of an array);
* ``unverified_keywords``: the keywords for which jsonschema-rs has not been shown to give
  jsonschema's verdicts (a schema using one is validated by jsonschema alone);
* ``structure_only``: the schema without the value-level keywords, for jsonschema-rs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

try:
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse  # type: ignore[no-redef]

from etrmflow.validation.decimals import KEYWORD as DECIMAL

Path = tuple[str, ...]
EACH = "*"
VALUE_KEYWORDS = ("format", "pattern", DECIMAL)
"""Checked in Python at their paths, with the very functions jsonschema uses."""

# Keywords on which jsonschema-rs and jsonschema agree for every JSON value (differential
# tests in tests/test_validation_equivalence.py), within the limits _limit_problem sets.
# None of them negates a subschema, so a verdict jsonschema-rs gets stricter than jsonschema
# (it does, for integers around 2**63) stays a suspect that jsonschema then clears.
VERIFIED = frozenset({
    "type", "enum", "const", "required", "properties", "additionalProperties", "items", "$ref",
    "$defs", "allOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", *VALUE_KEYWORDS})
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated",
                         "readOnly", "writeOnly", "$schema"})
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_LIMITS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_EXACT_FLOAT = 2 ** 53
# Keywords under which a value keyword has no plain path.
_UNREACHABLE = ("anyOf", "oneOf", "not", "if", "then", "else", "patternProperties",
                "additionalProperties", "prefixItems", "contains", "dependentSchemas",
                "unevaluatedProperties", "unevaluatedItems", "propertyNames", "$dynamicRef")


class UnreachableFormat(Exception):
    """A value keyword (format, pattern, decimal) sits where a plain path cannot reach it."""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Located:
    """``keyword: value`` of ``schema`` applies to the values at ``path``. Compared by
    identity: two occurrences of the same keyword are two checks."""

    path: Path
    keyword: str
    value: Any
    schema: Mapping[str, Any]


def resolve(root: Mapping[str, Any], ref: str) -> Any:
    """The target of a local ``$ref`` (``#/$defs/leg``); UnreachableFormat for other refs."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        raise UnreachableFormat(f"non-local $ref {ref}")
    node: Any = root
    try:
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
    except (LookupError, ValueError, TypeError):
        raise UnreachableFormat(f"$ref {ref} points to nothing") from None
    return node


def locate(schema: Mapping[str, Any]) -> list[Located]:
    """Every value keyword with its path; raises UnreachableFormat if one has no plain path."""
    found: list[Located] = []
    _walk(schema, schema, (), found, depth=0)
    return found


def format_paths(schema: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Every (path, format) in the schema; raises UnreachableFormat if one cannot be located."""
    return [(item.path, item.value) for item in locate(schema) if item.keyword == "format"]


def _walk(root: Mapping[str, Any], node: Any, path: Path, found: list[Located], depth: int) -> None:
    if not isinstance(node, Mapping):
        return
    if depth > 32:
        raise UnreachableFormat("schema too deep or recursive")
    found += [Located(path=path, keyword=k, value=node[k], schema=node)
              for k in VALUE_KEYWORDS if k in node]
    for keyword in _UNREACHABLE:
        if keyword in node and _mentions_value_keyword(node[keyword]):
            raise UnreachableFormat(keyword)
    if "$ref" in node:
        _walk(root, resolve(root, node["$ref"]), path, found, depth + 1)
    for sub in node.get("allOf", ()):
        _walk(root, sub, path, found, depth + 1)
    for name, sub in (node.get("properties") or {}).items():
        _walk(root, sub, path + (name,), found, depth + 1)
    if isinstance(node.get("items"), Mapping):
        _walk(root, node["items"], path + (EACH,), found, depth + 1)


def _mentions_value_keyword(node: Any) -> bool:
    if isinstance(node, Mapping):
        return any(k in node for k in (*VALUE_KEYWORDS, "$ref")) or any(
            _mentions_value_keyword(v) for v in node.values())
    if isinstance(node, list):
        return any(_mentions_value_keyword(v) for v in node)
    return False


def unverified_keywords(schema: Any) -> set[str]:
    """What keeps jsonschema-rs from deciding this schema (empty: it may)."""
    found: set[str] = set()
    for node in _subschemas(schema, schema, set()):
        if not isinstance(node, Mapping):
            found.add("boolean subschema")
            continue
        found.update(k for k in node if k not in VERIFIED and k not in ANNOTATIONS
                     and not k.startswith("x-"))
        found.update(_value_problems(schema, node))
    return found


def _value_problems(root: Any, node: Mapping[str, Any]) -> Iterator[str]:
    if node.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        yield "$schema"
    if "$ref" in node and _target(root, node["$ref"]) is None:
        yield "$ref"
    for keyword in _LIMITS:
        limit = node.get(keyword, 0)
        # Beyond 2**53 jsonschema-rs compares integers and floats differently (around 2**63).
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or abs(limit) > _EXACT_FLOAT:
            yield keyword
    if "items" in node and not isinstance(node["items"], Mapping):
        yield "items"


def _target(root: Any, ref: Any) -> Any:
    try:
        return resolve(root, ref) if isinstance(ref, str) else None
    except (UnreachableFormat, LookupError, ValueError, TypeError):
        return None


def _subschemas(root: Any, node: Any, seen: set[int]) -> Iterator[Any]:
    """The schema, every subschema under the verified applicators and every $ref target."""
    if id(node) in seen:
        return
    seen.add(id(node))
    yield node
    if not isinstance(node, Mapping):
        return
    children: list[Any] = [*(node.get("properties") or {}).values(), *(node.get("$defs") or {}).values(),
                           *(node.get("allOf") or ())]
    if not isinstance(node.get("additionalProperties", True), bool):
        children.append(node["additionalProperties"])
    if "items" in node:
        children.append(node["items"])
    if "$ref" in node and _target(root, node["$ref"]) is not None:
        children.append(_target(root, node["$ref"]))
    for child in children:
        yield from _subschemas(root, child, seen)


def _closed_root(schema: Mapping[str, Any]) -> bool:
    required, properties = schema.get("required"), schema.get("properties")
    return (schema.get("additionalProperties") is False and isinstance(required, list) and bool(required)
            and isinstance(properties, Mapping) and set(required) <= set(properties)
            and len(set(required)) == len(required) and len(properties) - len(required) <= 2
            and not {"$ref", "allOf", "minProperties", "maxProperties"} & set(schema))


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


Location = tuple[Any, ...]
"""Keys from the schema's root to a subschema (what jsonschema-rs reports as schema_path)."""


class RustSchema:
    """The schema as jsonschema-rs gets it: value keywords removed (plain patterns stay), and
    each ``format`` with an accelerator gets it appended to its ``allOf``.

    An accelerator is a subschema of one keyword that accepts only valid values of the format
    (a date-time regex without Feb 29, say): values it accepts need no Python check, and a
    value it rejects becomes a ``format`` suspect for jsonschema to judge. ``accelerated`` maps
    the location of each appended subschema to the original subschema holding the format.

    A closed root (``additionalProperties: false``, every required key a property, at most two
    optional ones) trades its ``required`` for key counts: jsonschema-rs looks each required key
    up anew in every record, but counts keys for free. Once rs has found no unexpected key, a
    record has every required key exactly when it has ``len(required)`` keys plus one for each
    optional key it has: ``minProperties``, raised by ``if: {required: [optional]}``. A failure
    of those (``required_proxies``) is a ``required`` suspect of the record, as is an
    unexpected key (it spoils the count).
    """

    def __init__(self, schema: Mapping[str, Any], accelerators: Mapping[str, Mapping[str, Any]],
                 formats: frozenset[int] = frozenset()) -> None:
        self._accelerators = accelerators
        self._formats = formats  # ids of the subschemas whose format may be accelerated
        self.accelerated: dict[Location, Mapping[str, Any]] = {}
        self.schema = self._copy(schema, ())
        self.required_proxies: frozenset[Location] = frozenset()
        if _closed_root(schema):
            self._count_required(schema["required"], [k for k in schema["properties"] if k not in schema["required"]])

    def _count_required(self, required: list[str], optional: list[str]) -> None:
        rules: list[dict[str, Any]] = []
        for size in range(len(optional), 0, -1):  # every non-empty subset, largest first
            rules += [{"if": {"required": list(keys)}, "then": {"minProperties": len(required) + size}}
                      for keys in itertools.combinations(optional, size)]
        del self.schema["required"]
        self.schema["minProperties"] = len(required)
        if rules:
            self.schema["allOf"] = rules
        self.required_proxies = frozenset({("minProperties",), *(("allOf", i, "then", "minProperties")
                                                                 for i in range(len(rules)))})

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
        accelerator = self._accelerators.get(node["format"]) \
            if id(node) in self._formats and isinstance(node.get("format"), str) else None
        if accelerator is not None:
            out["allOf"] = [*out.get("allOf", ()), dict(accelerator)]
            self.accelerated[(*location, "allOf", len(out["allOf"]) - 1)] = node
        return out
