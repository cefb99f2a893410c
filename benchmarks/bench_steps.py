"""Rows a second and peak memory of each built-in transform step on 1,000,000 sandbox trades.

    python benchmarks/bench_steps.py [--rows 1000000] [--page-rows 1000] [--repeats 3] [--only vwap,...]

The input is what a run hands its steps: valid sandbox trades, declared money as Decimal, one
frame per page. Each step is built through the plugin registry with representative options
(``STEPS`` below) and run as a pipeline runs it (``StepChain``: page by page, then ``finish``
for whole-dataset steps, whose stages go to a temporary folder; the output is counted, not
kept, as a run hands it to its sinks), in a fresh process per step so that its peak memory is its own: the
peak resident set above the process's size once the input is loaded (Linux resets the peak
through /proc/self/clear_refs; elsewhere the figure is the process peak). A step that is not
registered prints "not available"; options it refuses print its message.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS: dict[str, dict[str, Any]] = {
    "parse_timestamps": {"columns": ["delivery_start", "delivery_end", "updated_at"]},
    "to_local_time": {"columns": ["delivery_start", "delivery_end"], "tz": "Europe/Berlin"},
    "derive": {"columns": {"volume_kwh": "volume_mwh * 1000", "is_buy": "buy_sell == 'B'"}},
    "filter": {"where": "volume_mwh > 10"},
    "cast": {"columns": {"version": "string"}},
    "rename": {"columns": {"counterparty_lei": "lei"}},
    "select": {"columns": ["trade_id", "version", "price", "volume_mwh", "currency"]},
    "drop": {"columns": ["legs"]},
    "explode_legs": {"column": "legs", "prefix": "leg_", "empty": "keep"},
    "normalise_units": {"columns": ["volume_mwh"], "from": "MWh", "to": "GJ", "scale": 6},
    "normalise_currency": {"currency_column": "currency", "columns": ["price", "notional"]},
    "expand_intervals": {"start": "delivery_start", "end": "delivery_end", "resolution": "PT30M",
                         "tz": "Europe/Berlin"},
    "settlement_cycle": {"column": "delivery_start", "tz": "Europe/Berlin", "cycle": "monthly",
                         "payment": {"day_of_month": 20, "months_after": 1, "roll": "following"}},
    "join": {"file": "reference/counterparties.csv", "on": {"counterparty_lei": "lei"},
             "columns": {"name": "counterparty_name"}},
    "python": {"function": "bench_functions:add_book", "options": {"book": "POWER-DE"}},
    "dedupe": {"key": ["trade_id"], "order_by": ["version", "updated_at"], "keep": "latest"},
    "vwap": {"group_by": ["product_code", "delivery_start", "currency"], "price": "price",
             "volume": "volume_mwh", "scale": 4},
    "aggregate": {"group_by": ["counterparty_lei", "currency"],
                  "measures": {"trades": {"count": "trade_id"}, "total_notional": {"sum": "notional"},
                               "max_price": {"max": "price"}}},
    "reconcile": {"file": "reference/internal_executions.csv", "on": ["trade_id"],
                  "compare": {"volume_mwh": {"abs": 0.5}}, "left_name": "broker", "right_name": "internal"},
}
"""Representative options of each step; the name is the step's ``type``."""


def make_input(folder: Path, rows: int, page_rows: int) -> None:
    """The pages a run would hand its steps, pickled once, plus the project files steps read."""
    import pandas as pd
    import yaml

    from etrmflow.sandbox.data import is_invalid_trade, trade
    from etrmflow.validation.decimal_fields import DecimalFields

    schema = yaml.safe_load((ROOT / "contracts" / "trade.yml").read_text())["schema"]
    decimals, columns = DecimalFields(schema), list(schema["properties"])
    pages, index = [], 0
    while sum(map(len, pages)) < rows:  # about 1 in 20 trades is invalid and left out
        records = [trade(i, 7) for i in range(index, index + page_rows) if is_invalid_trade(i, 7) is None]
        frame = pd.DataFrame.from_records(decimals.convert(records[:rows - sum(map(len, pages))]))
        pages.append(frame[[c for c in columns if c in frame.columns]])
        index += page_rows
    with open(folder / "pages.pickle", "wb") as handle:
        pickle.dump(pages, handle, protocol=pickle.HIGHEST_PROTOCOL)
    reference = folder / "reference"
    reference.mkdir()
    leis = sorted({lei for page in pages for lei in page["counterparty_lei"].unique()})
    (reference / "counterparties.csv").write_text("lei,name\n" + "".join(f"{lei},CP {n}\n" for n, lei in enumerate(leis)))
    ids = [(t, v) for page in pages[: max(1, len(pages) // 10)] for t, v in zip(page["trade_id"], page["volume_mwh"])]
    (reference / "internal_executions.csv").write_text("trade_id,volume_mwh\n" + "".join(f"{t},{v}\n" for t, v in ids))
    (folder / "bench_functions.py").write_text(textwrap.dedent("""\
        def add_book(frame, options):
            return frame.assign(book=options["book"])
        """))


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_chain(step: Any, pages: list[Any]) -> int:
    """Rows out of ``step`` run over ``pages`` as a pipeline runs its chain (outputs dropped)."""
    import inspect

    from etrmflow.components import BatchInfo
    from etrmflow.engine import stages

    with tempfile.TemporaryDirectory(prefix="bench-steps-") as folder:
        options: dict[str, Any] = {}
        if "staging" in inspect.signature(stages.StepChain).parameters:
            from etrmflow.engine.staging import StagingPlace

            options["staging"] = StagingPlace(folder=Path(folder), pipeline="bench", run_id="bench")
        chain = stages.StepChain([step], **options)
        getattr(chain, "open", lambda: None)()
        try:
            rows = 0
            for index, frame in enumerate(pages):
                batch = BatchInfo(run_id="bench", batch_id=f"page-{index}", page_sha256="", pipeline="bench")
                rows += sum(len(out) for out, _ in chain.apply(frame, batch))
            return rows + sum(len(out) for out, _ in chain.finish())
        finally:
            getattr(chain, "close", lambda: None)()


def measure(folder: Path, name: str, options: dict[str, Any], repeats: int) -> dict[str, Any]:
    """In this (fresh) process: build the step, run it over every page, ``repeats`` times."""
    from etrmflow.components import Kind
    from etrmflow.engine.validation import build_component
    from etrmflow.plan import ComponentPlan
    from etrmflow.plugins import Registry, make_plugin_manager

    registry = Registry(make_plugin_manager())
    if registry.get(Kind.TRANSFORM, name) is None:
        return {"step": name, "status": "not available"}
    with open(folder / "pages.pickle", "rb") as handle:
        pages = pickle.load(handle)
    rows = sum(map(len, pages))
    try:
        step = build_component(registry, Kind.TRANSFORM, ComponentPlan(type=name, options=options),
                               project_dir=str(folder))
    except Exception as exc:  # noqa: BLE001 - a step still being written may refuse these options
        return {"step": name, "status": f"options refused: {type(exc).__name__}: {exc}"}
    seconds, out_rows = [], 0
    base = peak_rss_mb()
    exact = reset_peak()
    base = min(base, peak_rss_mb()) if exact else base
    for _ in range(repeats):
        began = time.perf_counter()
        try:
            out_rows = run_chain(step, pages)
        except Exception as exc:  # noqa: BLE001 - report, do not stop the other steps
            return {"step": name, "status": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
        seconds.append(time.perf_counter() - began)
    return {"step": name, "status": "ok", "rows": rows, "rows_out": out_rows,
            "rows_per_s": rows / statistics.median(seconds), "seconds": statistics.median(seconds),
            "peak_mb_above_input": peak_rss_mb() - base, "peak_exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--page-rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="Comma-separated step names (default: all).")
    parser.add_argument("--measure", nargs=3, metavar=("FOLDER", "STEP", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        folder, name, repeats = args.measure
        print(json.dumps(measure(Path(folder), name, STEPS[name], int(repeats))))
        return
    names = [n for n in args.only.split(",") if n] or list(STEPS)
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        make_input(Path(folder), args.rows, args.page_rows)
        print(f"input: {args.rows:,} valid sandbox trades in pages of ~{args.page_rows} rows "
              f"(built in {time.perf_counter() - began:.0f} s); median of {args.repeats}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'step':20s} {'rows/s':>12s} {'rows out':>11s} {'peak MB':>9s}")
        for name in names:
            done = subprocess.run([sys.executable, __file__, "--measure", folder, name, str(args.repeats)],
                                  check=False, capture_output=True, text=True, cwd=folder,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                      filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "step": name, "status": f"crashed: {done.stderr.strip().splitlines()[-1:]}"}
            if result["status"] != "ok":
                print(f"{name:20s} {result['status']}")
                continue
            print(f"{name:20s} {result['rows_per_s']:>12,.0f} {result['rows_out']:>11,} "
                  f"{result['peak_mb_above_input']:>9,.0f}{'' if result['peak_exact'] else ' (process peak)'}")


if __name__ == "__main__":
    main()
