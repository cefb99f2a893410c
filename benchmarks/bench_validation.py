"""Validation throughput: etrmflow's validators against per-record jsonschema, same run, same data.

    python benchmarks/bench_validation.py [--records 200000] [--repeats 3]

Prints records a second (median of the repeats) for:
  baseline   per-record jsonschema.Draft202012Validator.iter_errors with the same format checkers
  schema     etrmflow's json_schema validator (fast path + jsonschema for failing records)
  contract   json_schema + rules validators: what a pipeline runs per record
and the ratios to the baseline. The baseline runs on a sample (it is slow) and is scaled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jsonschema
import yaml

from etrmflow.builtins.formats import FORMAT_CHECKERS
from etrmflow.builtins.validators import JsonSchemaValidator, RulesValidator, build_format_checker
from etrmflow.components import ContractInfo, ValidationContext
from etrmflow.sandbox import is_invalid_trade, trade

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1000


def _rate(work: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = work()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-sample", type=int, default=20_000)
    args = parser.parse_args()

    contract_doc = yaml.safe_load((ROOT / "contracts" / "trade.yml").read_text())
    schema = contract_doc["schema"]
    records = [trade(i, seed=7) for i in range(args.records)]
    invalid = sum(1 for i in range(args.records) if is_invalid_trade(i, seed=7))
    info = ContractInfo(name="trade", version="1", primary_key=("trade_id", "version"), schema=schema)
    context = ValidationContext(contract=info, format_checkers=FORMAT_CHECKERS,
                                rules=tuple(contract_doc.get("rules") or ()))
    schema_validator = JsonSchemaValidator({}, context=context)
    rules_validator = RulesValidator({}, context=context)
    reference = jsonschema.Draft202012Validator(schema, format_checker=build_format_checker(FORMAT_CHECKERS))
    sample = records[: args.baseline_sample]

    def baseline() -> int:
        for record in sample:
            list(reference.iter_errors(record))
        return len(sample)

    def batches(*validators: Any) -> Callable[[], int]:
        def work() -> int:
            for start in range(0, len(records), BATCH):
                chunk = records[start:start + BATCH]
                for validator in validators:
                    validator.validate(chunk)
            return len(records)
        return work

    base = _rate(baseline, args.repeats)
    fast_schema = _rate(batches(schema_validator), args.repeats)
    contract = _rate(batches(schema_validator, rules_validator), args.repeats)
    print(f"records: {args.records} ({invalid / args.records:.1%} invalid), median of {args.repeats} runs, "
          f"python {sys.version.split()[0]}")
    print(f"baseline  per-record jsonschema      {base:>12,.0f} records/s")
    print(f"schema    etrmflow json_schema       {fast_schema:>12,.0f} records/s  ({fast_schema / base:5.1f}x)")
    print(f"contract  json_schema + rules        {contract:>12,.0f} records/s  ({contract / base:5.1f}x)")


if __name__ == "__main__":
    main()
