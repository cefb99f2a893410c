"""Unit and currency normalisation: energy quantities between MWh, kWh, GWh, GJ, therm and
MMBtu, and market pseudo-currencies (pence, cents) to their ISO 4217 currency.

Conversion factors are exact fractions. The therm is the one UK and EU gas markets trade (NBP,
quoted in pence per therm): 100,000 British thermal units (International Table) = 105.505585 MJ,
the value of the project's energy reference; 1 MMBtu = 10 therms; 1 MWh = 3.6 GJ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from etrmflow.components import Transform
from etrmflow.steps.common import COLUMNS, StepError, options_object, require_columns
from etrmflow.steps.values import SCALE, is_missing, row_names, scale_rows

MEGAJOULES: dict[str, Fraction] = {
    "kWh": Fraction(36, 10),
    "MWh": Fraction(3600),
    "GWh": Fraction(3_600_000),
    "GJ": Fraction(1000),
    "therm": Fraction("105.505585"),
    "MMBtu": Fraction("1055.05585"),
}
"""Megajoules in one unit: the exact definition of every unit ``normalise_units`` knows."""

_ALIASES = {"therms": "therm", "thm": "therm", "mmbtus": "MMBtu"}
_UNIT_NAMES = {name.lower(): name for name in MEGAJOULES} | _ALIASES
_UNIT = {"enum": sorted(MEGAJOULES), "description": "One of " + ", ".join(MEGAJOULES) + "."}

PSEUDO_CURRENCIES: dict[str, str] = {"GBX": "GBP", "EUX": "EUR", "USX": "USD"}
"""Market pseudo-codes for a currency's hundredth (pence, cents) and the currency they divide."""
_MINOR_UNIT = re.compile("[A-Z]{2}[a-z]")
"""The market's spelling of a currency's hundredth: GBp (pence), USd, ZAc (cents)."""


def canonical_unit(value: Any) -> str | None:
    """The unit's canonical spelling (``mwh`` and ``MWH`` are ``MWh``), or None if unknown."""
    return _UNIT_NAMES.get(value.strip().lower()) if isinstance(value, str) else None


class NormaliseUnits(Transform):
    """Convert energy quantities to one unit, and prices per unit along with them.

    Units: kWh, MWh, GWh, GJ, therm and MMBtu, read from a unit column row by row (matched
    ignoring case; ``therms`` works too) or declared once with ``from``. Volumes are multiplied
    by the exact factor, prices per unit divided by it, and the unit column gets the target
    unit. A therm is 105.505585 MJ (the UK/EU gas therm; 1 MMBtu = 10 therms).

    Decimal values (declared ``x-etrmflow-decimal``) stay Decimal and exact: a result that has
    no finite decimal form (therm to MWh) fails the step unless ``scale`` names the decimal
    places to round to (half to even). Floats stay floats; integers become floats. Rows already
    in the target unit are left untouched. An unknown or missing unit fails the step, naming it.

    Example::

        - {type: normalise_units, columns: [volume], unit_column: volume_unit, to: MWh, price_columns: [price], scale: 6}
    """

    type_name: ClassVar[str] = "normalise_units"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "columns": {**COLUMNS, "description": "Energy quantity columns to convert."},
        "to": {**_UNIT, "description": "The unit to convert to: " + _UNIT["description"]},
        "unit_column": {"type": "string", "minLength": 1,
                        "description": "The column naming each row's unit; rewritten with the target unit."},
        "from": {**_UNIT, "description": "The unit of every row, when there is no unit column: "
                                         + _UNIT["description"]},
        "price_columns": {**COLUMNS, "description": "Prices per unit (EUR/MWh, p/therm), converted inversely."},
        "scale": {**SCALE, "description": "Decimal places to round Decimal volumes (and prices, unless "
                                          "price_scale) to, half to even; without it a result must be exact."},
        "price_scale": {**SCALE, "description": "Decimal places to round Decimal prices to (default: scale)."},
    }, ["columns", "to"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        if ("unit_column" in options) == ("from" in options):
            raise ValueError("give exactly one of unit_column (each row's unit) and from (one unit for all rows)")
        both = sorted(set(options["columns"]) & set(options.get("price_columns", [])))
        if both:  # converted one way, then back: the unit column would say MWh of a kWh value
            raise ValueError(f"{', '.join(both)} is in both columns and price_columns; a column is a volume "
                             f"(multiplied by the factor) or a price per unit (divided by it)")
        self.to: str = options["to"]
        self.scale: int | None = options.get("scale")
        self.price_scale: int | None = options.get("price_scale", self.scale)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        volumes, prices = list(self.options["columns"]), list(self.options.get("price_columns", []))
        unit_column = self.options.get("unit_column")
        require_columns(frame, volumes + prices + ([unit_column] if unit_column else []), self.type_name)
        units = self._units(frame, unit_column).to_numpy(dtype=object)
        frame = frame.copy()
        for unit in pd.unique(units):
            if unit == self.to:
                continue
            rows = np.flatnonzero(units == unit)  # positions: index labels may repeat
            factor = MEGAJOULES[unit] / MEGAJOULES[self.to]
            for column in volumes:
                self._convert(frame, column, rows, factor, self.scale, unit)
            for column in prices:
                self._convert(frame, column, rows, 1 / factor, self.price_scale, unit)
        if unit_column:
            frame[unit_column] = self.to
        return frame

    def _units(self, frame: pd.DataFrame, unit_column: str | None) -> pd.Series:
        if unit_column is None:
            return pd.Series(self.options["from"], index=frame.index, dtype=object)
        raw = frame[unit_column]
        units = raw.map(canonical_unit).astype(object)
        unknown = [position for position, unit in enumerate(units) if is_missing(unit)]
        if unknown:
            values = sorted({str(raw.iloc[p]) for p in unknown if not is_missing(raw.iloc[p])})
            what = f"unknown unit {', '.join(map(repr, values))}" if values else "no unit"
            raise StepError(f"{self.type_name}: {what} in column {unit_column!r} at {row_names(frame, unknown)}; "
                            f"known units: {', '.join(MEGAJOULES)}")
        return units

    def _convert(self, frame: pd.DataFrame, column: str, rows: np.ndarray, factor: Fraction, scale: int | None,
                 unit: str) -> None:
        where = f"{self.type_name}: column {column!r} ({unit} to {self.to})"
        frame[column] = scale_rows(frame[column], rows, factor, scale, where=where)


class NormaliseCurrency(Transform):
    """Turn market pseudo-currencies into ISO 4217: GBX (pence) to GBP, EUX (euro cents) to EUR,
    USX (US cents) to USD, dividing the listed price and amount columns by 100.

    Only rows whose currency column holds a pseudo-code change; their currency becomes the ISO
    code. Codes are matched ignoring case (``gbx`` is GBX, ``gbp`` is GBP), except the market
    spelling of a hundredth: two capitals and a small last letter, as exchanges write pence
    ``GBp`` and cents ``USd``, ``ZAc``. Such a code is the hundredth of the currency it spells
    in capitals when the step converts to that currency (GBP, EUR, USD or a value of
    ``codes``), so ``GBp`` is pence, divided like GBX; when its capitals are a pseudo-code
    (``ZAc`` with ``codes: {ZAC: ZAR}``), it is that pseudo-code. Any other code is left as it
    is. Decimal values stay Decimal and exact (4040.00 GBX is 40.40 GBP); ``scale`` rounds them
    to that many decimal places (half to even) when the sink wants fewer digits. Floats stay
    floats; integers become floats. ``codes`` adds other pseudo-codes.

    Example::

        - {type: normalise_currency, currency_column: currency, columns: [price, notional]}
    """

    type_name: ClassVar[str] = "normalise_currency"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "currency_column": {"type": "string", "minLength": 1,
                            "description": "The column holding each row's currency code."},
        "columns": {**COLUMNS, "description": "Price and amount columns, in the row's currency."},
        "codes": {"type": "object", "minProperties": 1,
                  "additionalProperties": {"type": "string", "pattern": "^[A-Z]{3}$"},
                  "description": "More pseudo-codes for a hundredth of a currency, e.g. {ZAC: ZAR}, "
                                 "besides GBX, EUX and USX."},
        "scale": {**SCALE, "description": "Decimal places to round converted Decimal values to, half to even "
                                          "(default: exact)."},
    }, ["currency_column", "columns"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        codes = {**PSEUDO_CURRENCIES, **(options.get("codes") or {})}
        self.codes = {pseudo.upper(): iso for pseudo, iso in codes.items()}
        self.currencies = frozenset(self.codes.values())
        looping = sorted(pseudo for pseudo, iso in self.codes.items() if iso in self.codes)
        if looping:  # every amount in that currency would shrink a hundredfold, page after page
            raise ValueError(f"codes maps {', '.join(f'{p} to {self.codes[p]}' for p in looping)}"
                             f"{' (itself)' if all(self.codes[p] == p for p in looping) else ''}; "
                             f"a pseudo-code must map to the currency it is a hundredth of")

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        currency, columns = self.options["currency_column"], list(self.options["columns"])
        require_columns(frame, [currency, *columns], self.type_name)
        codes = frame[currency].to_numpy(dtype=object, copy=True)
        iso = np.array([self.iso_code(code) for code in codes], dtype=object)
        rows = np.flatnonzero(pd.notna(iso))  # positions: index labels may repeat
        if len(rows) == 0:
            return frame
        frame = frame.copy()
        for column in columns:
            where = f"{self.type_name}: column {column!r}"
            frame[column] = scale_rows(frame[column], rows, Fraction(1, 100), self.options.get("scale"), where=where)
        codes[rows] = iso[rows]
        dtype = frame[currency].dtype  # a category column becomes text: the ISO code may be a new category
        frame[currency] = pd.Series(codes, index=frame.index,
                                    dtype=object if isinstance(dtype, pd.CategoricalDtype) else dtype)
        return frame

    def iso_code(self, code: Any) -> str | None:
        """The ISO code whose hundredth ``code`` is, or None when the row is to stay as it is."""
        if not isinstance(code, str):
            return None
        code = code.strip()
        capitals = code.upper()
        if _MINOR_UNIT.fullmatch(code) and capitals not in self.codes:
            # GBp is pence, not pounds: ignoring case here would leave a price 100 times too big
            return capitals if capitals in self.currencies else None
        return self.codes.get(capitals)
