"""Durations in YAML: ``500ms``, ``5s``, ``2m``, ``1h``, ``7d``, ISO 8601 (``PT5S``, ``P7D``) or seconds."""

from __future__ import annotations

import re

_SIMPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
                  r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

DURATION_PATTERN = r"^(\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*|P(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?(T(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?)$"
"""For JSON Schemas of YAML documents."""


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = _SIMPLE.match(value)
    if match:
        return float(match.group(1)) * _UNIT[match.group(2)]
    match = _ISO.match(value.strip())
    if match and value.strip() not in ("P", "PT") and not value.strip().endswith("T"):
        weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 5s, 2m, 1h, 7d, PT30S, P7D)")
