"""Declared decimals turned into ``Decimal`` in valid records (after validation, before
transforms); see ``etrmflow.validation.decimals`` for the keyword."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from etrmflow.validation.decimals import KEYWORD, DecimalSpec, parse_spec, to_decimal
from etrmflow.validation.located import EACH, UnreachableFormat, locate


class DecimalFields:
    """Turns a contract's declared decimals into ``Decimal`` in records that passed validation.

    Declarations are found at plain paths (properties, array items, local ``$ref``); records are
    copied along the way, never changed in place (dead letters and checkpoints keep what the
    vendor sent).
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        try:
            located = locate(schema)
        except UnreachableFormat:  # such a schema is validated whole by jsonschema; see docs
            located = []
        self.paths = tuple((item.path, parse_spec(item.value)) for item in located if item.keyword == KEYWORD)

    def convert(self, records: list[Any]) -> list[Any]:
        if not self.paths:
            return records
        out = records
        for path, spec in self.paths:
            out = [self._at(record, path, spec) for record in out]
        return out

    def _at(self, value: Any, path: tuple[str, ...], spec: DecimalSpec) -> Any:
        if not path:
            return to_decimal(value, spec)
        head, rest = path[0], path[1:]
        if head == EACH:
            return [self._at(item, rest, spec) for item in value] if isinstance(value, list) else value
        if isinstance(value, dict) and head in value:
            return {**value, head: self._at(value[head], rest, spec)}
        return value
