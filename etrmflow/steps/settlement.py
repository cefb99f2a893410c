"""Settlement cycles and payment dates from delivery times (``settlement_cycle``).

The cycle is a LOCAL calendar period: a delivery starting 2026-03-31T22:00Z is April in Berlin.
Payment dates roll over weekends only; public holidays are not known to etrmflow.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

import pandas as pd

from etrmflow.components import Transform
from etrmflow.steps.common import StepError, options_object, require_columns
from etrmflow.steps.values import row_names, utc_instants

_NAME = {"type": "string", "minLength": 1}
_ROLLS = ("following", "preceding", "modified_following", "none")
_PAYMENT = {
    "type": "object", "additionalProperties": False,
    "description": "Also add a payment date column, from the cycle's end.",
    "properties": {
        "day_of_month": {"type": "integer", "minimum": 1, "maximum": 31,
                         "description": "Monthly cycles: the day of the paying month (a day past its end is "
                                        "its last day)."},
        "months_after": {"type": "integer", "minimum": 0, "maximum": 24,
                         "description": "Monthly cycles: months after the delivery month that pays (default 1)."},
        "days_after": {"type": "integer", "minimum": 0, "maximum": 366,
                       "description": "Weekly and daily cycles: calendar days after the cycle's last day."},
        "roll": {"enum": list(_ROLLS),
                 "description": "A payment date on a Saturday or Sunday: following (default) moves it to Monday, "
                                "preceding to Friday, modified_following to Monday unless that is next month "
                                "(then Friday), none leaves it. Holidays are not known."},
        "column": {**_NAME, "description": "Name of the payment date column (default payment_date)."},
    },
}


class SettlementCycle(Transform):
    """Label each row with its settlement cycle, from the LOCAL delivery date in the market's zone.

    ``cycle: monthly`` gives ``2026-03``, ``weekly`` the ISO week ``2026-W13``, ``daily``
    ``2026-03-29``, always from the local date of ``column`` (a timezone-aware timestamp or ISO
    8601 text with an offset) in ``tz``. Use the delivery start: a delivery ending at local
    midnight belongs to the day before.

    ``payment`` adds a payment date (``YYYY-MM-DD`` text): monthly cycles pay on ``day_of_month``
    of the month ``months_after`` the delivery month; weekly and daily cycles ``days_after`` the
    cycle's last day (Sunday for a week). A date on a weekend rolls as ``roll`` says; public
    holidays are not known, so check them against the market's calendar if they matter.

    Example::

        - type: settlement_cycle
          column: delivery_start
          tz: Europe/Berlin
          cycle: monthly
          payment: {day_of_month: 20, months_after: 1, roll: following}
    """

    type_name: ClassVar[str] = "settlement_cycle"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "column": {**_NAME, "description": "The column holding the delivery time (usually its start)."},
        "tz": {"type": "string", "format": "timezone", "description": "The market's IANA zone, e.g. Europe/Berlin."},
        "cycle": {"enum": ["monthly", "weekly", "daily"], "description": "The settlement period (default monthly)."},
        "output": {**_NAME, "description": "Name of the cycle label column (default settlement_cycle)."},
        "payment": _PAYMENT,
    }, ["column", "tz"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.cycle: str = options.get("cycle", "monthly")
        self.output: str = options.get("output", "settlement_cycle")
        self.payment: Mapping[str, Any] | None = options.get("payment")
        if self.payment is not None:
            _check_payment(self.cycle, self.payment)
            if self.payment.get("column", "payment_date") == self.output:
                raise ValueError("the payment date and the cycle label need different column names")

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        column = self.options["column"]
        require_columns(frame, [column], self.type_name)
        outputs = [self.output] + ([self.payment.get("column", "payment_date")] if self.payment is not None else [])
        taken = [name for name in outputs if name in frame.columns]
        if taken:
            raise StepError(f"{self.type_name}: column(s) {', '.join(taken)} already exist; name the new columns "
                            f"otherwise (output, payment.column)")
        instants = utc_instants(frame[column], where=f"{self.type_name}: column {column!r}")
        empty = [position for position, value in enumerate(instants) if pd.isna(value)]
        if empty:
            raise StepError(f"{self.type_name}: {row_names(frame, empty)} ha{'s' if len(empty) == 1 else 've'} "
                            f"no {column}; filter such rows out before, or fill them in")
        local = instants.dt.tz_convert(self.options["tz"])
        days = list(local.dt.date)
        frame = frame.copy()
        frame[self.output] = pd.Series([self._label(day) for day in days], index=frame.index, dtype=object)
        if self.payment is not None:
            paid = {day: self._pays(day) for day in set(days)}
            frame[self.payment.get("column", "payment_date")] = pd.Series(
                [paid[day] for day in days], index=frame.index, dtype=object)
        return frame

    def _label(self, day: dt.date) -> str:
        if self.cycle == "monthly":
            return f"{day.year:04d}-{day.month:02d}"
        if self.cycle == "weekly":
            year, week, _ = day.isocalendar()
            return f"{year:04d}-W{week:02d}"
        return day.isoformat()

    def _pays(self, day: dt.date) -> str:
        payment = self.payment or {}
        if self.cycle == "monthly":
            year, month = divmod(day.year * 12 + day.month - 1 + payment.get("months_after", 1), 12)
            last = calendar.monthrange(year, month + 1)[1]
            due = dt.date(year, month + 1, min(payment["day_of_month"], last))
        else:
            cycle_end = day + dt.timedelta(days=6 - day.weekday()) if self.cycle == "weekly" else day
            due = cycle_end + dt.timedelta(days=payment["days_after"])
        return roll(due, payment.get("roll", "following")).isoformat()


def _check_payment(cycle: str, payment: Mapping[str, Any]) -> None:
    if cycle == "monthly":
        if "day_of_month" not in payment or "days_after" in payment:
            raise ValueError("a monthly cycle's payment needs day_of_month (and optionally months_after), "
                             "not days_after")
    elif "days_after" not in payment or {"day_of_month", "months_after"} & set(payment):
        raise ValueError(f"a {cycle} cycle's payment needs days_after, not day_of_month or months_after")


def roll(day: dt.date, convention: str) -> dt.date:
    """``day`` moved off a weekend by a business-day convention (weekends only, no holidays)."""
    if day.weekday() < 5 or convention == "none":
        return day
    following = day + dt.timedelta(days=7 - day.weekday())
    preceding = day - dt.timedelta(days=day.weekday() - 4)
    if convention == "following":
        return following
    if convention == "preceding":
        return preceding
    return following if following.month == day.month else preceding
