"""The products the sandbox vendor trades: where, in which time zone, for which period.

Delivery periods are computed as UTC instants from local wall times, so a day on a clock
change has 23 or 25 hours, as in the real market.
"""

from __future__ import annotations

from dataclasses import dataclass

from etrmflow.sandbox.localtime import HOUR, epoch_day, local_to_utc

# How a product's period is laid out in local time (start of period, length).
DAY_BASE = "day"          # 00:00 -> 00:00 next day
PEAK = "peak"             # 08:00 -> 20:00
HOURLY = "hour"           # one clock hour
HALF_HOURLY = "half-hour"  # one GB settlement period
EFA_DAY = "efa-day"       # GB power: 23:00 previous day -> 23:00
GAS_DAY = "gas-day"       # 06:00 CET -> 06:00 CET (05:00 UK time on the NBP)


@dataclass(frozen=True, slots=True, kw_only=True)
class Product:
    code: str
    commodity: str
    zone: str
    delivery_point: str
    shape: str
    currencies: tuple[str, ...]
    price_cents: tuple[int, int]
    """Price range in hundredths of the first currency, per MWh."""

    @property
    def multi_hour(self) -> bool:
        return self.shape not in (HOURLY, HALF_HOURLY)

    def day_spanning(self, clock_change_day: int) -> int:
        """The delivery day whose period contains the clock change (a gas day starts the day before)."""
        return clock_change_day - 1 if self.shape == GAS_DAY else clock_change_day

    def period(self, day: int, draw: int) -> tuple[int, int]:
        """UTC start and end of delivery on local ``day``; ``draw`` picks the hour if hourly."""
        zone = self.zone
        if self.shape == DAY_BASE:
            return local_to_utc(day, 0, zone), local_to_utc(day + 1, 0, zone)
        if self.shape == PEAK:
            return local_to_utc(day, 8 * HOUR, zone), local_to_utc(day, 20 * HOUR, zone)
        if self.shape == EFA_DAY:
            return local_to_utc(day - 1, 23 * HOUR, zone), local_to_utc(day, 23 * HOUR, zone)
        if self.shape == GAS_DAY:
            opens = 5 * HOUR if zone == "Europe/London" else 6 * HOUR
            return local_to_utc(day, opens, zone), local_to_utc(day + 1, opens, zone)
        midnight = local_to_utc(day, 0, zone)
        step = HOUR if self.shape == HOURLY else HOUR // 2
        slots = (local_to_utc(day + 1, 0, zone) - midnight) // step  # 23/24/25 hours
        start = midnight + (draw % slots) * step
        return start, start + step


PRODUCTS: tuple[Product, ...] = (
    Product(code="DE-BASE-D", commodity="EL", zone="Europe/Berlin", delivery_point="10Y1001A1001A82H",
            shape=DAY_BASE, currencies=("EUR",), price_cents=(2_000, 15_000)),
    Product(code="DE-PEAK-D", commodity="EL", zone="Europe/Berlin", delivery_point="10Y1001A1001A82H",
            shape=PEAK, currencies=("EUR",), price_cents=(3_000, 20_000)),
    Product(code="DE-H", commodity="EL", zone="Europe/Berlin", delivery_point="10Y1001A1001A82H",
            shape=HOURLY, currencies=("EUR",), price_cents=(-5_000, 25_000)),
    Product(code="NL-BASE-D", commodity="EL", zone="Europe/Amsterdam", delivery_point="10YNL----------L",
            shape=DAY_BASE, currencies=("EUR",), price_cents=(2_000, 15_000)),
    Product(code="FR-BASE-D", commodity="EL", zone="Europe/Paris", delivery_point="10YFR-RTE------C",
            shape=DAY_BASE, currencies=("EUR",), price_cents=(1_500, 14_000)),
    Product(code="GB-BASE-D", commodity="EL", zone="Europe/London", delivery_point="10YGB----------A",
            shape=EFA_DAY, currencies=("GBP",), price_cents=(3_000, 12_000)),
    Product(code="GB-HH", commodity="EL", zone="Europe/London", delivery_point="10YGB----------A",
            shape=HALF_HOURLY, currencies=("GBP",), price_cents=(-2_000, 30_000)),
    Product(code="NBP-DA", commodity="NG", zone="Europe/London", delivery_point="21YGB----NBP---G",
            shape=GAS_DAY, currencies=("GBP", "GBX"), price_cents=(2_000, 4_500)),
    Product(code="TTF-DA", commodity="NG", zone="Europe/Amsterdam", delivery_point="21YNL----TTF---1",
            shape=GAS_DAY, currencies=("EUR",), price_cents=(2_500, 5_000)),
    Product(code="THE-DA", commodity="NG", zone="Europe/Berlin", delivery_point="37Y005053MH0000R",
            shape=GAS_DAY, currencies=("EUR",), price_cents=(2_600, 5_200)),
)
MULTI_HOUR_PRODUCTS: tuple[Product, ...] = tuple(p for p in PRODUCTS if p.multi_hour)
PRODUCT_CODES: tuple[str, ...] = tuple(p.code for p in PRODUCTS)

# The 2025 clock changes (spring 2025-03-30, autumn 2025-10-26). A quarter of the trades
# deliver on or next to the day that spans one, so 23- and 25-hour days are in every page.
CLOCK_CHANGE_DAYS: tuple[int, ...] = (epoch_day(2025, 3, 30), epoch_day(2025, 10, 26))
FIRST_DELIVERY_DAY = epoch_day(2025, 1, 1)
DELIVERY_DAYS_IN_YEAR = 365
