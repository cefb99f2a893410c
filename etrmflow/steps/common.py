"""What every step module shares: option-schema building blocks and the step error."""

from __future__ import annotations

from typing import Any

import pandas as pd

COLUMNS = {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True}
"""Options schema of a non-empty list of distinct column names (a column listed twice would be,
say, converted twice)."""


def options_object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An options schema that refuses unknown keys (so a typo is a located config error)."""
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


class StepError(ValueError):
    """A step cannot apply to the data it was given (e.g. a column is missing)."""


def require_columns(frame: pd.DataFrame, columns: list[str], step: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StepError(f"{step}: no column {', '.join(missing)} (columns: {', '.join(map(str, frame.columns))})")
