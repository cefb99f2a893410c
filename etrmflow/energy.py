"""Energy-market identifiers, currencies and ISO 8601 times: pure checks, no etrmflow imports.

* LEI (ISO 17442): 18 characters plus two ISO/IEC 7064 MOD 97-10 check digits.
* EIC (ENTSO-E): 15 characters plus a weighted mod-37 check character.
* Currencies: ISO 4217 codes, plus market pseudo-codes (GBX, EUX) only where asked for.
* Date-times: an instant needs an explicit offset; a local date-time has none, and the two are
  never confused (a naive value around a clock change is a wrong delivery hour).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

# ---------------------------------------------------------------------------------------------
# LEI
# ---------------------------------------------------------------------------------------------

_LEI_RE = re.compile(r"[A-Z0-9]{18}[0-9]{2}", re.ASCII)
_LEI_BASE_RE = re.compile(r"[A-Z0-9]{18}", re.ASCII)


def _mod97(text: str) -> int:
    """ISO/IEC 7064 MOD 97-10 remainder, letters counting as 10-35 (two digits each)."""
    remainder = 0
    for char in text:
        value = int(char, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder


def lei_check_digits(base18: str) -> str:
    """The two check digits of an 18-character LEI base (``HWUPKR0MPOU8FGXBT3`` -> ``94``)."""
    if not _LEI_BASE_RE.fullmatch(base18):
        raise ValueError(f"an LEI base is 18 characters of A-Z and 0-9, got {base18!r}")
    return f"{98 - _mod97(base18 + '00'):02d}"


def is_lei(value: Any) -> bool:
    """True for a well-formed LEI whose check digits are right.

    Check digits outside 02-98 are rejected even when the remainder is 1: ISO 7064 never
    issues them, so they betray a hand-made code. Like IBAN, the check detects every single
    substitution within digits or within letters, but not every digit-for-letter swap.
    """
    if not isinstance(value, str) or not _LEI_RE.fullmatch(value):
        return False
    return 2 <= int(value[18:]) <= 98 and _mod97(value) == 1


# ---------------------------------------------------------------------------------------------
# EIC
# ---------------------------------------------------------------------------------------------

EIC_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"
_EIC_VALUE = {char: index for index, char in enumerate(EIC_ALPHABET)}
_EIC_RE = re.compile(r"[0-9A-Z-]{16}", re.ASCII)


def eic_check_char(first15: str) -> str:
    """The check character of an EIC from its first 15 characters.

    Raises ValueError when the check would be ``-``: ENTSO-E never issues such a code.
    """
    if len(first15) != 15 or any(char not in _EIC_VALUE for char in first15):
        raise ValueError(f"an EIC without its check character is 15 characters of 0-9, A-Z "
                         f"and '-', got {first15!r}")
    total = sum((16 - index) * _EIC_VALUE[char] for index, char in enumerate(first15))
    check = EIC_ALPHABET[36 - (total - 1) % 37]
    if check == "-":
        raise ValueError(f"{first15!r} has no valid EIC check character (it would be '-')")
    return check


def is_eic(value: Any) -> bool:
    """True for a 16-character EIC whose check character is right (and not ``-``)."""
    if not isinstance(value, str) or not _EIC_RE.fullmatch(value):
        return False
    try:
        return eic_check_char(value[:15]) == value[15]
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Currencies
# ---------------------------------------------------------------------------------------------

ISO_4217_CODES: frozenset[str] = frozenset("""
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
    PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
    SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS
    VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA
    XXX YER ZAR ZMW ZWG ZWL
""".split())
"""ISO 4217 list one: active alphabetic codes, funds and X codes included. Codes replaced in
2021-2026 whose old and new forms overlap (ANG/XCG, SLL/SLE, ZWL/ZWG, CUC, BGN) are kept,
because settlement records from the changeover still carry them."""

MARKET_PSEUDO_CURRENCIES: dict[str, tuple[str, Decimal]] = {
    "GBX": ("GBP", Decimal("0.01")),
    "EUX": ("EUR", Decimal("0.01")),
}
"""Market quote units that are not ISO 4217: code -> (ISO currency, value of one unit in it).
UK gas trades in pence per therm (GBX); normalise explicitly, never silently."""


def is_iso4217(code: Any) -> bool:
    """True only for an active ISO 4217 alphabetic code (upper case); GBX is not one."""
    return isinstance(code, str) and code in ISO_4217_CODES


def is_currency(code: Any) -> bool:
    """True for an ISO 4217 code or one of the explicit ``MARKET_PSEUDO_CURRENCIES``."""
    return is_iso4217(code) or (isinstance(code, str) and code in MARKET_PSEUDO_CURRENCIES)


# ---------------------------------------------------------------------------------------------
# Dates, date-times and durations (extended ISO 8601 format, as RFC 3339 profiles it)
# ---------------------------------------------------------------------------------------------

_DATE = r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
_TIME = (r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
         r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?")
_OFFSET = r"(?P<offset>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)"
_DATE_RE = re.compile(_DATE, re.ASCII)
_DATETIME_RE = re.compile(_DATE + r"[Tt ]" + _TIME + _OFFSET + "?", re.ASCII)


def _build(match: re.Match[str], tzinfo: timezone | None) -> datetime:
    """A datetime from the regex groups; ValueError names an impossible field."""
    parts = match.groupdict()
    if parts["second"] == "60":
        raise ValueError("leap seconds (:60) are not supported")
    micro = int((parts["fraction"] or "0").ljust(6, "0")[:6])
    return datetime(int(parts["year"]), int(parts["month"]), int(parts["day"]),
                    int(parts["hour"]), int(parts["minute"]), int(parts["second"] or 0),
                    micro, tzinfo=tzinfo)


def _parse_offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return timezone.utc
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"UTC offset {text!r} is out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def parse_datetime_with_offset(text: str) -> datetime:
    """Parse an ISO 8601 / RFC 3339 date-time that carries ``Z`` or a UTC offset.

    Returns an aware datetime (fixed offset). Raises ValueError naming the problem: a naive
    value, a bare date, a malformed string or an impossible date. Seconds may be omitted;
    fractions beyond microseconds are truncated.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 date-time string, got {type(text).__name__}")
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        if _DATE_RE.fullmatch(text):
            raise ValueError(f"{text!r} is a date, not a date-time with a UTC offset")
        raise ValueError(f"{text!r} is not an ISO 8601 date-time (expected e.g. "
                         f"'2025-03-30T01:00:00+01:00')")
    if match["offset"] is None:
        raise ValueError(f"{text!r} has no UTC offset: add 'Z' or an offset such as '+01:00' "
                         f"(a local time is ambiguous around a clock change)")
    try:
        return _build(match, _parse_offset(match["offset"]))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date-time: {exc}") from None


def is_offset_datetime(text: Any) -> bool:
    """True for a date-time with ``Z`` or a UTC offset (see ``parse_datetime_with_offset``)."""
    try:
        parse_datetime_with_offset(text)
    except ValueError:
        return False
    return True


def is_local_datetime(text: Any) -> bool:
    """True for an ISO 8601 local date-time *without* an offset, e.g. ``2025-10-26T02:30:00``."""
    if not isinstance(text, str):
        return False
    match = _DATETIME_RE.fullmatch(text)
    if match is None or match["offset"] is not None:
        return False
    try:
        _build(match, None)
    except ValueError:
        return False
    return True


def is_local_datetime_in(text: Any, zone: str) -> bool:
    """A local date-time (no offset) that exists on the wall clocks of ``zone``.

    Times the spring clock change skips (02:30 on 2025-03-30 in Europe/Berlin) do not exist and
    fail; the repeated autumn hour exists twice and passes (a transform resolves which one).
    """
    if not is_local_datetime(text):
        return False
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    tz, wall = ZoneInfo(zone), datetime.fromisoformat(text)
    # a skipped wall time does not survive a round trip through UTC, whichever fold it takes
    return any(wall.replace(tzinfo=tz, fold=fold).astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None)
               == wall for fold in (0, 1))


def is_iso_date(text: Any) -> bool:
    """True for an ISO 8601 calendar date ``YYYY-MM-DD`` that exists."""
    if not isinstance(text, str) or not _DATE_RE.fullmatch(text):
        return False
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"
_DURATION_RE = re.compile(
    rf"P(?:(?P<weeks>{_NUMBER}W)"
    rf"|(?:(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}D)?"
    rf"(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?))", re.ASCII)


def is_iso_duration(text: Any) -> bool:
    """True for an ISO 8601 duration such as ``P1D``, ``PT30M``, ``P1Y2M10DT2H30M``, ``PT0.5S``.

    At least one component is required (``P`` and ``PT`` are not durations); weeks stand
    alone (``P2W``); only the last component may carry a fraction.
    """
    if not isinstance(text, str) or not _DURATION_RE.fullmatch(text):
        return False
    if text.endswith(("P", "T")):
        return False
    components = re.findall(r"[0-9.,]+", text)
    return all("." not in part and "," not in part for part in components[:-1])
