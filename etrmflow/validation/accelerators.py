"""Accelerators for etrmflow's own formats: JSON Schema that jsonschema-rs checks in Rust and
that accepts only values the format's Python checker accepts (see ``located.RustSchema``).

They are exact for the common case and silent on the rest: a value an accelerator rejects is
judged by the real checker (Feb 29 of a leap year, say, or a lower-case ``t``), so an
accelerator may be stricter than its format but never more lenient.
tests/test_validation_equivalence.py checks that on generated strings, through jsonschema-rs.

Only ``date-time`` has one: update timestamps are new in every record, so a Python memo does
not help them, while a few hundred trade dates or a handful of currencies are cheaper to check
memoised in Python than in Rust (and a failing ``enum`` of 180 codes costs jsonschema-rs ~6 µs
to describe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Years 0001-9999; days 29-31 only in months that always have them.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_DATE = (_YEAR + r"-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
         r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)")
# No leap second (:60), at most nanoseconds, offsets up to 23:59.
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)"

ACCELERATORS: dict[str, dict[str, Any]] = {
    "date-time": {"pattern": f"^{_DATE}[Tt ]{_TIME}{_OFFSET}$"},
}
"""Format name -> a one-keyword subschema accepting only valid values of etrmflow's checker."""


def accelerators_for(checkers: Mapping[str, Callable[[Any], bool]],
                     builtin: Mapping[str, Callable[[Any], bool]]) -> dict[str, dict[str, Any]]:
    """The accelerators of the formats still checked by etrmflow's own checker (a plugin that
    replaces a format loses its accelerator)."""
    return {name: accelerator for name, accelerator in ACCELERATORS.items()
            if name in checkers and checkers[name] is builtin.get(name)}
