"""Built-in JSON Schema formats for energy data, registered like any plugin's.

Use them in a contract's schema::

    properties:
      counterparty_lei: {type: string, format: lei}
      delivery_point: {type: string, format: eic}
      currency: {type: string, format: iso4217}          # ISO 4217, plus GBX and EUX
      settlement_currency: {type: string, format: iso4217-strict}
      delivery_start: {type: string, format: date-time}  # an offset or Z is required
      local_start: {type: string, format: local-date-time}
      resolution: {type: string, format: duration}       # PT15M, P1D
      trade_date: {type: string, format: date}

They replace jsonschema's own ``date-time``, ``date`` and ``duration`` checks, so that every
contract checks the same thing whichever optional jsonschema extras are installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from zoneinfo import available_timezones

from etrmflow import hookimpl
from etrmflow.energy import (
    is_currency,
    is_eic,
    is_iso4217,
    is_iso_date,
    is_iso_duration,
    is_lei,
    is_local_datetime,
    is_local_datetime_in,
    is_offset_datetime,
)


def strings_only(check: Callable[[str], bool]) -> Callable[[Any], bool]:
    """JSON Schema formats constrain strings only: any other value passes (``type`` judges it)."""

    @functools.wraps(check)
    def checker(value: Any) -> bool:
        return not isinstance(value, str) or check(value)

    return checker


FORMAT_CHECKERS: dict[str, Callable[[Any], bool]] = {
    "lei": strings_only(is_lei),
    "eic": strings_only(is_eic),
    "iso4217": strings_only(is_currency),
    "iso4217-strict": strings_only(is_iso4217),
    "date-time": strings_only(is_offset_datetime),
    "local-date-time": strings_only(is_local_datetime),
    "duration": strings_only(is_iso_duration),
    "date": strings_only(is_iso_date),
}


def _zoned_local_formats() -> dict[str, Callable[[Any], bool]]:
    """``local-date-time@Europe/Berlin`` and so on: a local time that exists in that zone."""
    return {f"local-date-time@{zone}": strings_only(functools.partial(_in_zone, zone=zone))
            for zone in sorted(available_timezones())}


def _in_zone(text: str, zone: str) -> bool:
    return is_local_datetime_in(text, zone)


@hookimpl
def etrmflow_format_checkers() -> dict[str, Callable[[Any], bool]]:
    """The energy formats above, by name, and ``local-date-time@ZONE`` for every IANA zone."""
    return {**FORMAT_CHECKERS, **_zoned_local_formats()}
