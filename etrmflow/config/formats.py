"""Value forms that etrmflow parses itself, checked at validate time by the parser the run uses.

Two ways for a schema (a document schema or a component's ``options_schema``) to ask for them:

* ``"pattern": "^\\\\$"`` (a JSON path) or ``"pattern": DURATION_PATTERN`` (a duration): the
  regular expression alone accepts ``$.a..b`` or ``PT``, which the run would then reject;
* ``"format": "json-path" | "duration" | "expression" | "timezone"``, for plugin authors::

      options_schema = {"type": "object", "properties": {
          "where": {"type": "string", "format": "expression"},
          "tz": {"type": "string", "format": "timezone"}}}

JSON Schema's own formats (``date``, ``date-time``...) are checked as well.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jsonschema

from etrmflow.durations import DURATION_PATTERN, parse_duration
from etrmflow.jsonpath import compile_path


def check_expression(text: str) -> None:
    from etrmflow.expr import (
        compile_expression,  # the expression package is heavy; load on use
    )

    compile_expression(text)


def expression_message(message: str) -> str:
    """An ExpressionError's message without Python's echo (``invalid syntax: invalid syntax``)."""
    head, _, rest = message.partition(": ")
    return head if rest == head else message


def check_timezone(name: str) -> None:
    """An IANA zone such as Europe/Berlin; raises ValueError naming a close match."""
    from etrmflow.config.check import did_you_mean

    try:
        ZoneInfo(name)
        return
    except (ZoneInfoNotFoundError, ValueError):
        pass
    hint = did_you_mean(name, available_timezones())
    raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin"
                     + (f"; {hint}" if hint.startswith("did") else "") + ")")


PARSED_PATTERNS: dict[str, Callable[[str], Any]] = {"^\\$": compile_path, DURATION_PATTERN: parse_duration}
"""Schema patterns whose values are checked by parsing, with the parser's message."""

PARSED_FORMATS: dict[str, Callable[[str], Any]] = {
    "json-path": compile_path, "duration": parse_duration, "expression": check_expression,
    "timezone": check_timezone,
}


@cache
def option_format_checker() -> jsonschema.FormatChecker:
    """jsonschema's format checker plus etrmflow's parsed formats (which raise ValueError)."""
    checker = jsonschema.FormatChecker()
    for name, parse in PARSED_FORMATS.items():
        checker.checks(name, raises=(ValueError,))(_strings_only(parse))
    return checker


def _strings_only(parse: Callable[[str], Any]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if isinstance(value, str):
            parse(value)
        return True

    return check
