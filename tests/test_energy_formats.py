"""Identifiers, currencies and ISO 8601 times (etrmflow.energy), and the formats plugin."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pluggy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etrmflow import hookspecs
from etrmflow.builtins import formats
from etrmflow.energy import (
    EIC_ALPHABET,
    ISO_4217_CODES,
    MARKET_PSEUDO_CURRENCIES,
    eic_check_char,
    is_currency,
    is_eic,
    is_iso4217,
    is_iso_date,
    is_iso_duration,
    is_lei,
    is_local_datetime,
    is_offset_datetime,
    lei_check_digits,
    parse_datetime_with_offset,
)

VALID_LEIS = ["HWUPKR0MPOU8FGXBT394", "7LTWFZYICNSX8D621K86", "5493001KJTIIGC8Y1R12",
              "529900T8BM49AURSDO55", "213800KUD8LAJWSQ9D15", "724500VKKSH9QOLTFR81"]
VALID_EICS = ["10YCZ-CEPS-----N", "10X1001A1001A450", "10YNL----------L", "10YFR-RTE------C",
              "10YBE----------2", "10YGB----------A", "10Y1001A1001A82H", "37Y005053MH0000R",
              "22XWATTPLUS----G"]
LEI_CHARS = string.digits + string.ascii_uppercase


# --- LEI ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lei", VALID_LEIS)
def test_reference_leis_are_valid_and_their_check_digits_recomputed(lei: str) -> None:
    assert is_lei(lei)
    assert lei_check_digits(lei[:18]) == lei[18:]


@pytest.mark.parametrize("value", [
    "HWUPKR0MPOU8FGXBT395", "969500T3MBS4SQAMHJ45", "a1b2c3d4e5f6g7h8i9l0",
    "HWUPKR0MPOU8FGXBT39", "HWUPKR0MPOU8FGXBT3944", "HWUPKR0MPOU8FGXBT3A4", "", None, 42,
])
def test_invalid_leis_are_rejected(value: object) -> None:
    assert not is_lei(value)


def test_check_digits_outside_02_to_98_are_rejected_even_when_the_remainder_is_1() -> None:
    base = "529900T8BM49AU0021"
    assert lei_check_digits(base) == "98"
    assert is_lei(base + "98")
    # base * 100 + 1 is also 1 mod 97, but ISO 7064 never issues "01".
    assert not is_lei(base + "01")


@pytest.mark.parametrize("base", ["HWUPKR0MPOU8FGXBT", "hwupkr0mpou8fgxbt3", "HWUPKR0MPOU8FGXBT-"])
def test_lei_check_digits_needs_an_18_character_base(base: str) -> None:
    with pytest.raises(ValueError, match="an LEI base is 18 characters of A-Z and 0-9"):
        lei_check_digits(base)


@given(st.text(alphabet=LEI_CHARS, min_size=18, max_size=18))
def test_a_base_with_computed_check_digits_always_validates(base: str) -> None:
    assert is_lei(base + lei_check_digits(base))


@given(st.text(alphabet=LEI_CHARS, min_size=18, max_size=18), st.integers(0, 19), st.data())
def test_any_single_substitution_within_digits_or_within_letters_is_detected(
        base: str, position: int, data: st.DataObject) -> None:
    lei = base + lei_check_digits(base)
    same_class = string.digits if lei[position].isdigit() else string.ascii_uppercase
    replacement = data.draw(st.sampled_from([c for c in same_class if c != lei[position]]))
    assert not is_lei(lei[:position] + replacement + lei[position + 1:])


def test_a_digit_for_letter_swap_can_go_undetected_as_in_iban() -> None:
    # MOD 97-10 maps a letter to two digits, so swapping a digit for a letter shifts the
    # number: ISO 7064 does not promise to catch it. Documented in is_lei.
    assert is_lei("HWUPKR0MPOU8FGXBT394")
    assert is_lei("HWUP0R0MPOU8FGXBT394")


# --- EIC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("eic", VALID_EICS)
def test_reference_eics_are_valid_and_their_check_char_recomputed(eic: str) -> None:
    assert is_eic(eic)
    assert eic_check_char(eic[:15]) == eic[15]


@pytest.mark.parametrize("value", [
    "10YCB-EUROPEU--8", "21X000EUROPEU--8", "10YEU-EUROPOW--8", "10ycz-ceps-----n",
    "10YCZ-CEPS-----", "10YCZ-CEPS-----NN", "10YCZ_CEPS-----N", "10YCZ-CEPS00002-", None, 10,
])
def test_invalid_eics_are_rejected(value: object) -> None:
    assert not is_eic(value)


def test_an_eic_whose_check_would_be_a_dash_cannot_exist() -> None:
    with pytest.raises(ValueError) as caught:
        eic_check_char("10YCZ-CEPS00002")
    assert str(caught.value) == ("'10YCZ-CEPS00002' has no valid EIC check character "
                                 "(it would be '-')")


def test_eic_check_char_needs_15_characters_of_the_alphabet() -> None:
    with pytest.raises(ValueError, match=r"15 characters of 0-9, A-Z and '-', got '10ycz'"):
        eic_check_char("10ycz")


def _valid_eic(first15: str) -> str | None:
    try:
        return first15 + eic_check_char(first15)
    except ValueError:
        return None


@given(st.text(alphabet=EIC_ALPHABET, min_size=15, max_size=15), st.integers(0, 15), st.data())
def test_any_single_character_change_to_an_eic_is_detected(
        first15: str, position: int, data: st.DataObject) -> None:
    eic = _valid_eic(first15)
    if eic is None:
        return  # no EIC exists with this body
    assert is_eic(eic)
    replacement = data.draw(st.sampled_from([c for c in EIC_ALPHABET if c != eic[position]]))
    assert not is_eic(eic[:position] + replacement + eic[position + 1:])


# --- currencies --------------------------------------------------------------------------------

def test_iso4217_is_strict_and_currency_adds_only_the_explicit_pseudo_codes() -> None:
    energy_currencies = "EUR GBP USD CHF CZK DKK HUF NOK PLN RON SEK BGN".split()
    assert all(is_iso4217(code) and is_currency(code) for code in energy_currencies)
    assert [is_iso4217(code) for code in ("GBX", "EUX", "eur", "EURO", "XYZ", None)] == [False] * 6
    assert [is_currency(code) for code in ("GBX", "EUX", "gbx", "XYZ", 978)] == [
        True, True, False, False, False]
    assert MARKET_PSEUDO_CURRENCIES == {"GBX": ("GBP", Decimal("0.01")),
                                        "EUX": ("EUR", Decimal("0.01"))}


def test_the_iso_list_holds_active_codes_only() -> None:
    assert all(len(code) == 3 and code.isascii() and code.isupper() for code in ISO_4217_CODES)
    assert {"HRK", "DEM", "FRF", "VEF", "MRO", "STD"}.isdisjoint(ISO_4217_CODES)
    assert not set(MARKET_PSEUDO_CURRENCIES) & ISO_4217_CODES


# --- date-times and durations ------------------------------------------------------------------

CET, CEST = timezone(timedelta(hours=1)), timezone(timedelta(hours=2))


@pytest.mark.parametrize("text, expected", [
    ("2025-10-26T02:30:00+02:00", datetime(2025, 10, 26, 2, 30, tzinfo=CEST)),
    ("2025-10-26T02:15:00+01:00", datetime(2025, 10, 26, 2, 15, tzinfo=CET)),
    ("2025-03-30T01:00:00Z", datetime(2025, 3, 30, 1, 0, tzinfo=timezone.utc)),
    ("2025-03-30t01:00:00z", datetime(2025, 3, 30, 1, 0, tzinfo=timezone.utc)),
    ("2025-03-30 01:00:00.5+0100", datetime(2025, 3, 30, 1, 0, 0, 500000, tzinfo=CET)),
    ("2025-03-30T01:00:00.123456789-05:30",
     datetime(2025, 3, 30, 1, 0, 0, 123456, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
    ("2025-03-30T01:00+01:00", datetime(2025, 3, 30, 1, 0, tzinfo=CET)),
    ("2025-03-30T01:00:00+01", datetime(2025, 3, 30, 1, 0, tzinfo=CET)),
])
def test_parse_datetime_with_offset(text: str, expected: datetime) -> None:
    parsed = parse_datetime_with_offset(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text, message", [
    ("2025-10-26T02:30:00", "'2025-10-26T02:30:00' has no UTC offset: add 'Z' or an offset such "
                            "as '+01:00' (a local time is ambiguous around a clock change)"),
    ("2025-10-26", "'2025-10-26' is a date, not a date-time with a UTC offset"),
    ("26/10/2025 02:30", "'26/10/2025 02:30' is not an ISO 8601 date-time (expected e.g. "
                         "'2025-03-30T01:00:00+01:00')"),
    ("20251026T023000Z", "'20251026T023000Z' is not an ISO 8601 date-time (expected e.g. "
                         "'2025-03-30T01:00:00+01:00')"),
    ("2025-02-29T00:00:00Z", "'2025-02-29T00:00:00Z' is not a valid date-time: day is out of "
                             "range for month"),
    ("2025-01-01T24:00:00Z", "'2025-01-01T24:00:00Z' is not a valid date-time: hour must be in "
                             "0..23"),
    ("2025-01-01T00:00:00+24:00", "'2025-01-01T00:00:00+24:00' is not a valid date-time: UTC "
                                  "offset '+24:00' is out of range"),
    ("2016-12-31T23:59:60Z", "'2016-12-31T23:59:60Z' is not a valid date-time: leap seconds "
                             "(:60) are not supported"),
])
def test_parse_datetime_with_offset_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_datetime_with_offset(text)
    assert str(caught.value) == message


def test_a_period_across_the_autumn_clock_change_is_ordered_as_instants() -> None:
    start = parse_datetime_with_offset("2025-10-26T02:30:00+02:00")
    end = parse_datetime_with_offset("2025-10-26T02:15:00+01:00")
    assert end - start == timedelta(minutes=45)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.sampled_from([timezone.utc, CET, CEST,
                                               timezone(-timedelta(hours=9, minutes=30))])))
def test_any_aware_isoformat_round_trips(moment: datetime) -> None:
    assert parse_datetime_with_offset(moment.isoformat()) == moment
    assert is_offset_datetime(moment.isoformat())
    assert not is_local_datetime(moment.isoformat())
    assert is_local_datetime(moment.replace(tzinfo=None).isoformat())


def test_offset_and_local_date_times_never_overlap() -> None:
    values = ["2025-10-26T02:30:00", "2025-10-26T02:30", "2025-10-26T02:30:00.25",
              "2025-10-26T02:30:00Z", "2025-10-26T02:30:00+01:00", "2025-10-26", "2025-13-01T00:00",
              "x", 5, None]
    assert [is_local_datetime(v) for v in values] == [
        True, True, True, False, False, False, False, False, False, False]
    assert [is_offset_datetime(v) for v in values] == [
        False, False, False, True, True, False, False, False, False, False]


def test_iso_dates() -> None:
    values = ["2024-02-29", "2025-02-29", "2025-1-01", "20250101", "2025-W01-1",
              "2025-01-01T00:00Z"]
    assert [is_iso_date(v) for v in values] == [True, False, False, False, False, False]


@pytest.mark.parametrize("text", ["P1D", "PT30M", "P1Y2M10DT2H30M", "PT0.5S", "PT1,5H", "P2W",
                                  "PT15M", "P1M", "PT0S", "P1DT0.25H"])
def test_valid_durations(text: str) -> None:
    assert is_iso_duration(text)


@pytest.mark.parametrize("text", ["P", "PT", "1D", "P1DT", "PT1D", "P1W1D", "P0.5DT1H", "-P1D",
                                  "p1d", "P1H", "PT1.S", "", None, 5])
def test_invalid_durations(text: object) -> None:
    assert not is_iso_duration(text)


# --- the formats plugin ------------------------------------------------------------------------

def _hooked_checkers() -> dict:
    manager = pluggy.PluginManager("etrmflow")
    manager.add_hookspecs(hookspecs)
    manager.register(formats, name="etrmflow.builtins.formats")
    (checkers,) = manager.hook.etrmflow_format_checkers()
    return checkers


def test_the_plugin_registers_every_energy_format() -> None:
    from zoneinfo import available_timezones

    names = sorted(_hooked_checkers())
    zoned = [name for name in names if name.startswith("local-date-time@")]
    assert [name for name in names if name not in zoned] == [
        "date", "date-time", "duration", "eic", "iso4217", "iso4217-strict", "lei", "local-date-time"]
    assert zoned == sorted(f"local-date-time@{zone}" for zone in available_timezones())


@pytest.mark.parametrize("name, good, bad", [
    ("lei", "HWUPKR0MPOU8FGXBT394", "HWUPKR0MPOU8FGXBT395"),
    ("eic", "10YCZ-CEPS-----N", "10YCB-EUROPEU--8"),
    ("iso4217", "GBX", "XYZ"),
    ("iso4217-strict", "GBP", "GBX"),
    ("date-time", "2025-10-26T02:30:00+02:00", "2025-10-26T02:30:00"),
    ("local-date-time", "2025-10-26T02:30:00", "2025-10-26T02:30:00+02:00"),
    ("duration", "PT15M", "15M"),
    ("date", "2025-10-26", "2025-10-32"),
])
def test_each_format_checks_strings_and_passes_other_types(name: str, good: str, bad: str) -> None:
    check = _hooked_checkers()[name]
    assert check(good) is True
    assert check(bad) is False
    assert [check(value) for value in (None, 5, 1.5, True, [], {})] == [True] * 6


# --- local-date-time@ZONE ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "zone", "exists"), [
    ("2025-03-30T02:30:00", "Europe/Berlin", False),   # skipped by the spring change
    ("2025-03-30T01:59:59", "Europe/Berlin", True),
    ("2025-03-30T03:00:00", "Europe/Berlin", True),
    ("2025-10-26T02:30:00", "Europe/Berlin", True),    # repeated: exists (twice)
    ("2025-03-30T01:30:00", "Europe/London", False),
    ("2025-03-09T02:30:00", "America/Chicago", False),
    ("2025-03-30T02:30:00", "America/Chicago", True),  # another zone's change is no gap here
    ("2025-10-26T02:30:00+01:00", "Europe/Berlin", False),  # has an offset: not a local time
    ("26/10/2025 02:30", "Europe/Berlin", False),
])
def test_local_date_time_in_a_declared_zone(value: str, zone: str, exists: bool) -> None:
    from etrmflow.builtins.formats import etrmflow_format_checkers

    assert etrmflow_format_checkers()[f"local-date-time@{zone}"](value) is exists
