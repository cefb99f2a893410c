"""A step module inside a package, importing a sibling module of the package."""

from __future__ import annotations

import pandas as pd

from case_pkg.codes import GAS


def flag_gas(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(is_gas=frame["commodity"] == GAS)
