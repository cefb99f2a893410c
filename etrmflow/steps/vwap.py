"""``vwap``: the volume-weighted average price of each group, over every page of the run."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from etrmflow.engine.staging_codec import object_array
from etrmflow.steps.common import COLUMNS, StepError, options_object, require_columns
from etrmflow.steps.dataset import CHUNK_ROWS, DatasetStep, Grain
from etrmflow.steps.values import (
    divide,
    exact_product,
    exact_sum,
    group_codes,
    has_decimals,
    is_missing,
    to_decimal,
)

log = logging.getLogger("etrmflow.run")
_NAME = {"type": "string", "minLength": 1}
OUTPUT_DEFAULTS = {"vwap": "vwap", "volume": "total_volume", "count": "trade_count"}


class Vwap(DatasetStep):
    """Volume-weighted average price per group: sum(price × volume) / sum(volume).

    One output row per group: the ``group_by`` columns, the VWAP, the total volume and the
    number of rows that went in. With Decimal prices or volumes (``x-etrmflow-decimal`` in the
    contract) every sum is exact and the VWAP is rounded once, half to even, to ``scale``
    decimals; floats in such a sum count by their shortest repr (the digits the vendor sent).
    Otherwise the result is a float. Rows without a price or a volume are left out of the sums
    and the count (and counted in the run results). A group whose volumes add up to zero (signed
    buys and sells that net out), or that has no usable row, has no average: its VWAP is empty,
    never a division error. A whole-dataset step: see pipelines.md.

    Example::

        - {type: vwap, group_by: [product_code, delivery_start, currency], price: price, volume: volume_mwh, scale: 4}
    """

    type_name: ClassVar[str] = "vwap"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "group_by": {**COLUMNS, "description": "One VWAP per distinct combination of these columns "
                                               "(include the currency: prices in EUR and GBX do not average)."},
        "price": {**_NAME, "default": "price", "description": "The price column."},
        "volume": {**_NAME, "default": "volume_mwh", "description": "The volume column (the weights)."},
        "scale": {"type": "integer", "minimum": 0, "maximum": 28, "default": 6,
                  "description": "Decimals of a Decimal VWAP, rounded half to even."},
        "columns": {"type": "object", "additionalProperties": False,
                    "description": "Names of the output columns.",
                    "properties": {"vwap": {**_NAME, "default": "vwap", "description": "The VWAP."},
                                   "volume": {**_NAME, "default": "total_volume",
                                              "description": "The sum of the volumes."},
                                   "count": {**_NAME, "default": "trade_count",
                                             "description": "Rows in the group."}}},
        "chunk_rows": CHUNK_ROWS,
    }, ["group_by"])

    def __init__(self, options: Any, *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.group_by = list(options["group_by"])
        self.price = options.get("price", "price")
        self.volume = options.get("volume", "volume_mwh")
        self.scale = int(options.get("scale", 6))
        self.out = {**OUTPUT_DEFAULTS, **(options.get("columns") or {})}
        names = list(self.out.values())
        for name in sorted({n for n in names if names.count(n) > 1}):
            raise StepError(f"vwap: two output columns are named {name}; name them apart in columns")
        for name in sorted(set(names) & set(self.group_by)):
            raise StepError(f"vwap: output column {name} is also a group_by column; it would overwrite the "
                            f"group's key, so name it otherwise in columns")

    def group_key(self) -> list[str]:
        return self.group_by

    def output_grain(self) -> Grain:
        return Grain(key=tuple(self.group_by), columns=(*self.group_by, *self.out.values()))

    def apply_chunks(self, chunks: Any, scratch: Any) -> Any:
        yield from super().apply_chunks(chunks, scratch)
        skipped, zero = self.counts.get("rows_without_price_or_volume", 0), self.counts.get("zero_volume_groups", 0)
        if skipped or zero:
            log.warning("vwap: %d row(s) without a price or volume left out; %d group(s) without volume "
                        "(none, or netting to zero) have an empty vwap", skipped, zero)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        require_columns(frame, [*self.group_by, self.price, self.volume], "vwap")
        frame = frame.reset_index(drop=True)
        usable = ~(frame[self.price].map(is_missing) | frame[self.volume].map(is_missing)).to_numpy(dtype=bool)
        self.count("rows_without_price_or_volume", int((~usable).sum()))
        codes, out = group_codes(frame, self.group_by)
        exact = has_decimals(frame[self.price]) or has_decimals(frame[self.volume])
        vwap, volume = (self._exact if exact else self._float)(frame, codes, usable, len(out))
        out[self.out["vwap"]] = vwap
        out[self.out["volume"]] = volume
        out[self.out["count"]] = np.bincount(codes[usable], minlength=len(out)).astype("int64")
        self.count("groups", len(out))
        self.count("rows", len(frame))
        return out

    def _float(self, frame: pd.DataFrame, codes: np.ndarray, usable: np.ndarray, groups: int) -> tuple[Any, Any]:
        price = frame[self.price].astype("float64").to_numpy()
        volume = frame[self.volume].astype("float64").to_numpy()
        weighted = np.bincount(codes[usable], weights=(price * volume)[usable], minlength=groups)
        total = np.bincount(codes[usable], weights=volume[usable], minlength=groups)
        zero = total == 0
        self.count("zero_volume_groups", int(zero.sum()))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(zero, np.nan, weighted / total), total

    def _exact(self, frame: pd.DataFrame, codes: np.ndarray, usable: np.ndarray, groups: int) -> tuple[Any, Any]:
        weighted: list[list[Any]] = [[] for _ in range(groups)]
        volumes: list[list[Any]] = [[] for _ in range(groups)]
        rows = zip(codes.tolist(), usable.tolist(), frame[self.price].tolist(), frame[self.volume].tolist())
        for code, ok, price, volume in rows:
            if ok:
                amount = to_decimal(volume, f"vwap: volume {self.volume}")
                weighted[code].append(exact_product(to_decimal(price, f"vwap: price {self.price}"), amount))
                volumes[code].append(amount)
        vwaps, totals = [], []
        for products, amounts in zip(weighted, volumes):
            total = exact_sum(amounts)
            totals.append(total)
            vwaps.append(None if total == 0 else divide(exact_sum(products), total, self.scale))
        self.count("zero_volume_groups", sum(1 for v in vwaps if v is None))
        return object_array(vwaps), object_array(totals)
