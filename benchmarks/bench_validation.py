"""Validation throughput: etrmflow's validators against per-record jsonschema, same run, same data.

    python benchmarks/bench_validation.py [--records 200000] [--repeats 5] [--baseline-sample 20000]
                                          [--batch 1000]

Measures records a second for:
  baseline   per-record jsonschema.Draft202012Validator.iter_errors with the same format
             checkers (the reference), on the first --baseline-sample records (it is slow)
  schema     etrmflow's json_schema validator, a page at a time (--batch records; the numpy
             and jsonschema-rs set-up per batch weighs more on small pages)
  contract   json_schema + rules validators: what a pipeline runs per record

The three run in turn within each repeat, so that machine load hits them alike; medians of the
repeats are printed with their ratios to the baseline. Validators are built afresh for every
repeat: their memos start cold, as in a new run. The generated records are frozen out of the
garbage collector (gc.freeze): a run holds a page or two, not 200,000 records.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from etrmflow.builtins.formats import FORMAT_CHECKERS
from etrmflow.builtins.validators import (
    JsonSchemaValidator,
    RulesValidator,
    build_format_checker,
)
from etrmflow.components import ContractInfo, ValidationContext, Validator
from etrmflow.sandbox import is_invalid_trade, trade

ROOT = Path(__file__).resolve().parents[1]
SEED = 7


def _rate(work: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - started)


def _baseline(schema: dict[str, Any], sample: list[Any]) -> Callable[[], int]:
    reference = jsonschema.Draft202012Validator(schema, format_checker=build_format_checker(FORMAT_CHECKERS))

    def work() -> int:
        for record in sample:
            list(reference.iter_errors(record))
        return len(sample)
    return work


def _batched(records: list[Any], batch: int, build: Callable[[], list[Validator]]) -> Callable[[], int]:
    def work() -> int:
        validators = build()  # cold memos, as in a new run; building is part of the cost
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            for validator in validators:
                validator.validate(chunk)
        return len(records)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-sample", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="records a page (default 1000)")
    args = parser.parse_args()

    contract_doc = yaml.safe_load((ROOT / "contracts" / "trade.yml").read_text())
    schema = contract_doc["schema"]
    records = [trade(i, seed=SEED) for i in range(args.records)]
    invalid = sum(1 for i in range(args.records) if is_invalid_trade(i, seed=SEED))
    info = ContractInfo(name="trade", version="1", primary_key=("trade_id", "version"), schema=schema)
    context = ValidationContext(contract=info, format_checkers=FORMAT_CHECKERS,
                                rules=tuple(contract_doc.get("rules") or ()))
    # The 200,000 records sit in memory only for the benchmark (a run holds a page or two):
    # without this, whichever contender triggers a full collection pays for scanning them all.
    gc.freeze()
    runs: dict[str, Callable[[], int]] = {
        "baseline": _baseline(schema, records[: args.baseline_sample]),
        "schema": _batched(records, args.batch, lambda: [JsonSchemaValidator({}, context=context)]),
        "contract": _batched(records, args.batch, lambda: [JsonSchemaValidator({}, context=context),
                                                           RulesValidator({}, context=context)]),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, work in runs.items():
            rates[name].append(_rate(work))
    median = {name: statistics.median(found) for name, found in rates.items()}
    base = median["baseline"]
    print(f"records: {args.records:,} ({invalid / args.records:.1%} invalid), baseline on the first "
          f"{min(args.baseline_sample, args.records):,}; pages of {args.batch:,}; median of "
          f"{args.repeats} alternating runs; python {sys.version.split()[0]}")
    labels = {"baseline": "per-record jsonschema", "schema": "etrmflow json_schema",
              "contract": "json_schema + rules"}
    for name, label in labels.items():
        spread = f"[{min(rates[name]):,.0f} .. {max(rates[name]):,.0f}]"
        print(f"{name:<9} {label:<22} {median[name]:>11,.0f} records/s {spread:>24}  "
              f"{median[name] / base:6.1f}x")


if __name__ == "__main__":
    main()
