"""Schema drift: fields the vendor sends that the contract does not declare.

Counted whether or not the records are valid: with ``additionalProperties: false`` such records
are also quarantined, but drift is the early warning that the vendor changed its payload, and
it is reported either way.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any


class DriftCounter:
    """Counts, per page, the top-level fields that the schema's ``properties`` do not declare.

    Names matching the schema's ``patternProperties`` are declared too. A schema without
    ``properties`` declares no fields at all, so it has no drift to report.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        properties = schema.get("properties")
        self.declared: frozenset[str] | None = frozenset(properties) if isinstance(properties, Mapping) else None
        self._patterns = [re.compile(p) for p in (schema.get("patternProperties") or {})]
        self._undeclared: dict[str, bool] = {}

    def count(self, records: list[Any]) -> dict[str, int]:
        """``{field: records that have it}`` for the undeclared fields of ``records``."""
        declared = self.declared
        if declared is None:
            return {}
        found: Counter[str] = Counter()
        for record in records:
            # issuperset first: most records have no extra field, and it allocates nothing.
            if isinstance(record, dict) and not declared.issuperset(record):
                found.update(record.keys() - declared)
        return {name: n for name, n in found.items() if self._is_undeclared(name)}

    def _is_undeclared(self, name: str) -> bool:
        known = self._undeclared.get(name)
        if known is None:
            known = self._undeclared[name] = not any(p.search(name) for p in self._patterns)
        return known
