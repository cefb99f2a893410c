"""What a schema asks of a record, seen from the fast path.

* ``locate``: where each value-level keyword (``format``, ``pattern``, ``x-etrmflow-decimal``)
  applies, as a plain path of property names and ``*`` (every item of an array);
* ``unverified_keywords``: the keywords for which jsonschema-rs has not been shown to give
  jsonschema's verdicts (a schema using one is validated by jsonschema alone).

``rust_schema`` turns the schema into what jsonschema-rs checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from etrmflow.validation.decimals import KEYWORD as DECIMAL

Path = tuple[str, ...]
EACH = "*"
VALUE_KEYWORDS = ("format", "pattern", DECIMAL)
"""Checked in Python at their paths, with the very functions jsonschema uses (a plain
``pattern`` is left to jsonschema-rs, see ``rust_schema.plain_pattern``)."""

# Keywords on which jsonschema-rs and jsonschema agree for every JSON value (differential
# tests in tests/test_validation_equivalence.py), within the limits _value_problems sets.
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
