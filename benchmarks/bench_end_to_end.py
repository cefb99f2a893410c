"""End-to-end throughput and memory: fetch, validate, transform and upsert N sandbox trades.

    python benchmarks/bench_end_to_end.py [--records 100000,1000000] [--repeats 3] [--page-size 1000]

For each dataset size the sandbox vendor runs in its own process (as a real vendor would), with
a page cache large enough for the whole dataset (``--cache-mb``): its first walk generates the
trades (reported as "sandbox, first walk"), later walks are served from memory, so the vendor
is not what is measured. In the same run, alternating with the etrmflow runs, a bare aiohttp
loop fetches and decodes the same pages: the baseline of what the network and JSON decoding
alone cost. Each etrmflow run is a fresh process (``etrmflow run``, SQLite upsert).

Printed per size, medians of the repeats: records a second of the bare loop; of the pipeline
(its own duration in run_results.json: fetch, validate, transform, upsert, checkpoints); of the
whole process (start-up included); the CPU seconds the process used per 100,000 records
(steadier than wall time on a shared machine); the peak RSS. Last, the ratio of the peak RSS of
the largest size to the smallest's: memory must not grow with the length of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
SANDBOX = ("import sys; from etrmflow.sandbox import routes; routes.TRADE_PAGES.limit = int(sys.argv[1]) * 2**20; "
           "from etrmflow.cli.main import run_cli; sys.exit(run_cli(sys.argv[2:]))")
RUN = ("import json, resource, sys; from etrmflow.cli.main import run_cli; rc = run_cli(['run', "
       "'pipelines/trades.yml']); usage = resource.getrusage(resource.RUSAGE_SELF); print('USAGE', "
       "json.dumps({'rss_kb': usage.ru_maxrss, 'cpu_s': usage.ru_utime + usage.ru_stime})); sys.exit(rc)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sandbox(records: int, cache_mb: int = 1024) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SANDBOX, str(cache_mb), "sandbox", "--port", str(port),
                                "--trades", str(records)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               env=ENV)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("sandbox did not start")


async def bare_fetch(url: str, page_size: int) -> int:
    headers = {"Authorization": "Bearer sandbox-token"}
    count, cursor = 0, None
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            async with session.get(f"{url}/api/v2/trades", params=params) as response:
                body = orjson.loads(await response.read())
            count += len(body["trades"])
            cursor = body.get("next_cursor")
            if not cursor:
                return count


def timed_bare_fetch(url: str, page_size: int) -> float:
    started = time.perf_counter()
    fetched = asyncio.run(bare_fetch(url, page_size))
    return fetched / (time.perf_counter() - started)


def write_project(folder: Path, page_size: int) -> None:
    (folder / "connectors").mkdir()
    (folder / "pipelines").mkdir()
    (folder / "contracts").mkdir()
    (folder / "contracts" / "trade.yml").write_text((ROOT / "contracts" / "trade.yml").read_text())
    (folder / "connectors" / "vendor.yml").write_text(textwrap.dedent(f"""\
        name: vendor
        base_url: "{{{{ env_var('SANDBOX_URL') }}}}"
        auth: {{type: bearer, token: sandbox-token}}
        streams:
          trades:
            path: /api/v2/trades
            params: {{limit: {page_size}}}
            records: $.trades
            paginator: {{type: cursor, cursor: $.next_cursor, param: cursor}}
        """))
    (folder / "pipelines" / "trades.yml").write_text(textwrap.dedent("""\
        name: trades
        source: {connector: vendor, stream: trades}
        contract: trade
        transforms:
          - {type: parse_timestamps, columns: [delivery_start, delivery_end]}
        sinks:
          - {type: sqlite, path: target/etrmflow.db, table: trades, mode: upsert}
        """))


def run_pipeline(url: str, page_size: int) -> dict[str, Any]:
    """One `etrmflow run` in a fresh process and a fresh project."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_project(folder, page_size)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RUN], cwd=folder, capture_output=True, text=True,
                              env={**ENV, "SANDBOX_URL": url}, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        pipeline = json.loads((folder / "target" / "run_results.json").read_text())["pipelines"][0]
    usage = json.loads(next(line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("USAGE")))
    fetched = pipeline["counts"]["fetched"]
    return {"process": fetched / seconds, "pipeline": fetched / pipeline["duration_s"],
            "cpu_per_100k": usage["cpu_s"] * 100_000 / fetched, "rss_mb": usage["rss_kb"] / 1024,
            "fetched": fetched, "timings": pipeline.get("timings", {})}


def measure(records: int, repeats: int, page_size: int, cache_mb: int) -> dict[str, Any]:
    sandbox, url = start_sandbox(records, cache_mb)
    try:
        cold = timed_bare_fetch(url, page_size)  # generates every page once; the cache keeps them
        bare, runs = [], []
        for _ in range(repeats):
            bare.append(timed_bare_fetch(url, page_size))
            runs.append(run_pipeline(url, page_size))
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    median = {key: statistics.median(run[key] for run in runs)
              for key in ("process", "pipeline", "cpu_per_100k", "rss_mb")}
    stages = {stage: statistics.median(run["timings"].get(stage, 0.0) for run in runs) for stage in runs[0]["timings"]}
    return {"records": records, "cold": cold, "bare": statistics.median(bare), **median, "stages": stages}


def report(result: dict[str, Any], repeats: int) -> None:
    bare = result["bare"]
    print(f"\n{result['records']:,} records, median of {repeats}")
    print(f"  sandbox, first walk (generates)  {result['cold']:>10,.0f} records/s")
    print(f"  bare aiohttp fetch + decode      {bare:>10,.0f} records/s")
    print(f"  etrmflow pipeline                {result['pipeline']:>10,.0f} records/s "
          f"({result['pipeline'] / bare:.2f}x of bare fetch)")
    print(f"  etrmflow process (with start-up) {result['process']:>10,.0f} records/s")
    print(f"  CPU seconds per 100,000 records  {result['cpu_per_100k']:>10.2f}")
    print(f"  peak RSS                         {result['rss_mb']:>10,.0f} MB")
    print("  stage seconds (worker thread)    " + ", ".join(f"{k} {v:.2f}" for k, v in result["stages"].items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", default="100000,1000000",
                        help="Comma-separated dataset sizes (default: 100000,1000000).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--cache-mb", type=int, default=1024, help="The sandbox's page cache (MiB).")
    args = parser.parse_args()
    sizes = [int(size) for size in args.records.split(",")]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; page size {args.page_size}")
    results = []
    for size in sizes:
        results.append(measure(size, args.repeats, args.page_size, args.cache_mb))
        report(results[-1], args.repeats)
    if len(results) > 1:
        small, large = min(results, key=lambda r: r["records"]), max(results, key=lambda r: r["records"])
        print(f"\npeak RSS {large['records']:,} / {small['records']:,} records: "
              f"{large['rss_mb'] / small['rss_mb']:.2f} ({large['rss_mb']:,.0f} MB / {small['rss_mb']:,.0f} MB)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
