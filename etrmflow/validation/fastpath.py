"""A fast yes/no answer to "is this record valid?", with ``jsonschema`` kept as the reference.

Per-record ``jsonschema`` with format checks runs at roughly 10,000 trade records a second,
far slower than fetching. The fast path splits the question:

1. structure (types, required, enums, patterns, bounds, ``$ref``): jsonschema-rs, compiled
   once, with formats switched off (hundreds of thousands of records a second);
2. formats: every ``format`` keyword whose location is a plain path of ``properties`` /
   ``items`` / local ``$ref`` steps is checked at that path by the very same
   ``jsonschema.FormatChecker`` the reference uses, memoised per distinct value (identifiers
   and delivery periods repeat across records).

A record passing both is valid. Any other record is handed to the reference ``jsonschema``
validator, which produces the violations: so the reported errors are always jsonschema's, and
a record the fast path doubts but jsonschema accepts is still valid. When a schema puts a
``format`` somewhere a plain path cannot reach (``anyOf``, ``patternProperties``, ...), the fast
path checks formats through jsonschema-rs callbacks instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema
import jsonschema_rs

Path = tuple[str, ...]
EACH = "*"
_MEMO_LIMIT = 200_000
_UNREACHABLE = ("anyOf", "oneOf", "not", "if", "then", "else", "patternProperties", "additionalProperties",
                "prefixItems", "contains", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems",
                "propertyNames", "$dynamicRef")


class UnreachableFormat(Exception):
    """A format sits where a plain property path cannot reach it."""


def format_paths(schema: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Every (path, format) in the schema; raises UnreachableFormat if one cannot be located."""
    found: list[tuple[Path, str]] = []
    _walk(schema, schema, (), found, depth=0)
    return found


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise UnreachableFormat(f"non-local $ref {ref}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _walk(root: Mapping[str, Any], node: Any, path: Path, found: list[tuple[Path, str]], depth: int) -> None:
    if not isinstance(node, Mapping):
        return
    if depth > 32:
        raise UnreachableFormat("schema too deep or recursive")
    if "format" in node:
        found.append((path, node["format"]))
    for keyword in _UNREACHABLE:
        if keyword in node and _mentions_format(node[keyword]):
            raise UnreachableFormat(keyword)
    if "$ref" in node:
        _walk(root, _resolve(root, node["$ref"]), path, found, depth + 1)
    for sub in node.get("allOf", ()):
        _walk(root, sub, path, found, depth + 1)
    for name, sub in (node.get("properties") or {}).items():
        _walk(root, sub, path + (name,), found, depth + 1)
    if isinstance(node.get("items"), Mapping):
        _walk(root, node["items"], path + (EACH,), found, depth + 1)


def _mentions_format(node: Any) -> bool:
    if isinstance(node, Mapping):
        return "format" in node or "$ref" in node or any(_mentions_format(v) for v in node.values())
    if isinstance(node, list):
        return any(_mentions_format(v) for v in node)
    return False


def _values_at(record: Any, path: Path) -> Iterator[Any]:
    if not path:
        yield record
        return
    head, rest = path[0], path[1:]
    if head == EACH:
        if isinstance(record, list):
            for item in record:
                yield from _values_at(item, rest)
    elif isinstance(record, dict) and head in record:
        yield from _values_at(record[head], rest)


class FastCheck:
    """``is_valid(record)``: True only when the reference validator would also say valid."""

    def __init__(self, schema: Mapping[str, Any], format_checker: jsonschema.FormatChecker,
                 checkers: Mapping[str, Callable[[Any], bool]]) -> None:
        self._format_checker = format_checker
        self._memo: dict[tuple[str, str], bool] = {}
        try:
            self._paths = format_paths(schema)
            self._structure = jsonschema_rs.validator_for(schema, validate_formats=False)
        except UnreachableFormat:
            self._paths = []
            self._structure = jsonschema_rs.validator_for(
                schema, validate_formats=True,
                formats={name: _conforms(format_checker, name) for name in format_checker.checkers})

    def is_valid(self, record: Any) -> bool:
        if not self._structure.is_valid(record):
            return False
        for path, name in self._paths:
            for value in _values_at(record, path):
                if isinstance(value, str) and not self._conforms(name, value):
                    return False
        return True

    def _conforms(self, name: str, value: str) -> bool:
        key = (name, value)
        verdict = self._memo.get(key)
        if verdict is None:
            verdict = self._format_checker.conforms(value, name)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()  # bounded memory: a cache, not a ledger
            self._memo[key] = verdict
        return verdict


def _conforms(format_checker: jsonschema.FormatChecker, name: str) -> Callable[[str], bool]:
    return lambda value: format_checker.conforms(value, name)
