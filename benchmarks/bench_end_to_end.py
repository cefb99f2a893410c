"""End-to-end throughput and memory: fetch, validate, transform and upsert N sandbox trades.

    python benchmarks/bench_end_to_end.py [--records 100000,1000000] [--repeats 3] [--page-size 1000]

For each dataset size the sandbox vendor runs in its own process (as a real vendor would), with
a page cache large enough for the whole dataset (``--cache-mb``): its first walk generates the
trades (reported as "sandbox, first walk"), later walks are served from memory, so the vendor
is not what is measured. In the same run, alternating with the etrmflow runs, two baselines in
fresh processes of their own: a bare aiohttp loop that fetches and decodes the same pages (what
the network and JSON decoding alone cost), and the same loop that also upserts each page's
records into an SQLite table like the one etrmflow creates (same columns, key, journal mode and
fsyncs, one transaction a page; no validation, no DataFrame, no audit, no checkpoint): the floor
of any loader that lands these records in SQLite from Python, on this machine, today. Each
etrmflow run is a fresh process (``etrmflow run``, SQLite upsert).

Printed per size, medians of the repeats: records a second of the two bare loops; of the pipeline
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
import sqlite3
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
BARE = ("import asyncio, sys, time; sys.path.insert(0, sys.argv[1]); import bench_end_to_end as bench; "
        "began = time.perf_counter(); count = asyncio.run(bench.bare_fetch(sys.argv[2], int(sys.argv[3]), "
        "sys.argv[4] or None)); print(count / (time.perf_counter() - began))")
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


async def bare_fetch(url: str, page_size: int, database: str | None = None) -> int:
    """Fetch and decode every page; with ``database``, upsert each page's records there too, in a
    thread while the next page is fetched (as etrmflow overlaps them)."""
    headers = {"Authorization": "Bearer sandbox-token"}
    count, cursor, writing = 0, None, None
    db = bare_table(database) if database else None
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            async with session.get(f"{url}/api/v2/trades", params=params) as response:
                body = orjson.loads(await response.read())
            if db is not None:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(bare_upsert, db, body["trades"]))
            count += len(body["trades"])
            cursor = body.get("next_cursor")
            if not cursor:
                if writing is not None:
                    await writing
                return count


BARE_COLUMNS = ("trade_id", "version", "trade_date", "counterparty_lei", "commodity", "product_code", "buy_sell",
                "delivery_point", "delivery_start", "delivery_end", "volume_mwh", "price", "currency", "notional",
                "updated_at", "legs")
BARE_LINEAGE = ("run", "batch", "page", "2026-01-01T00:00:00Z")


def bare_table(path: str) -> sqlite3.Connection:
    """The table etrmflow makes of the trade contract (20 columns, the same key), WAL, FULL sync."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    kinds = {"version": "INTEGER NOT NULL", "volume_mwh": "REAL", "trade_id": "TEXT NOT NULL"}
    columns = [*BARE_COLUMNS, "run_id", "batch_id", "page_sha256", "loaded_at"]
    declared = ", ".join(f"{column} {kinds.get(column, 'TEXT')}" for column in columns)
    db.execute(f"CREATE TABLE trades ({declared}, PRIMARY KEY (trade_id, version))")
    return db


def bare_upsert(db: sqlite3.Connection, records: list[dict[str, Any]]) -> None:
    """One transaction a page; money as text at its scale, legs as JSON, as etrmflow stores them."""
    rows = [(r["trade_id"], r["version"], r.get("trade_date"), r.get("counterparty_lei"), r.get("commodity"),
             r.get("product_code"), r.get("buy_sell"), r.get("delivery_point"), r.get("delivery_start"),
             r.get("delivery_end"), r.get("volume_mwh"), money(r.get("price")), r.get("currency"),
             money(r.get("notional")), r.get("updated_at"),
             orjson.dumps(r["legs"]).decode() if "legs" in r else None, *BARE_LINEAGE) for r in records]
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*BARE_COLUMNS[2:], "run_id", "batch_id", "page_sha256",
                                                         "loaded_at"))
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO trades VALUES ({', '.join('?' * 20)}) ON CONFLICT (trade_id, version) "
                   f"DO UPDATE SET {updates}", rows)
    db.execute("COMMIT")


def money(value: Any) -> Any:
    """Text at scale 2 for a number (the sample's invalid records, not validated here, go as they are)."""
    return f"{value:.2f}" if type(value) in (int, float) else value


def timed_bare(url: str, page_size: int, load: bool) -> float:
    """Records a second of a bare loop in a fresh process (a fresh table when ``load``), timed
    from after its imports, as the pipeline figure is."""
    with tempfile.TemporaryDirectory() as name:
        database = str(Path(name) / "bare.db") if load else ""
        done = subprocess.run([sys.executable, "-c", BARE, str(Path(__file__).parent), url, str(page_size),
                               database], capture_output=True, text=True, env=ENV, check=True)
        return float(done.stdout.split()[0])


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
        cold = timed_bare(url, page_size, load=False)  # generates every page once; the cache keeps them
        bare, loaded, runs = [], [], []
        for _ in range(repeats):
            bare.append(timed_bare(url, page_size, load=False))
            loaded.append(timed_bare(url, page_size, load=True))
            runs.append(run_pipeline(url, page_size))
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    median = {key: statistics.median(run[key] for run in runs)
              for key in ("process", "pipeline", "cpu_per_100k", "rss_mb")}
    stages = {stage: statistics.median(run["timings"].get(stage, 0.0) for run in runs) for stage in runs[0]["timings"]}
    return {"records": records, "cold": cold, "bare": statistics.median(bare), "loaded": statistics.median(loaded),
            **median, "stages": stages}


def report(result: dict[str, Any], repeats: int) -> None:
    bare = result["bare"]
    print(f"\n{result['records']:,} records, median of {repeats}")
    print(f"  sandbox, first walk (generates)  {result['cold']:>10,.0f} records/s")
    print(f"  bare aiohttp fetch + decode      {bare:>10,.0f} records/s")
    print(f"  bare fetch + decode + SQLite     {result['loaded']:>10,.0f} records/s")
    print(f"  etrmflow pipeline                {result['pipeline']:>10,.0f} records/s "
          f"({result['pipeline'] / bare:.2f}x of bare fetch, {result['pipeline'] / result['loaded']:.2f}x of bare "
          f"fetch + SQLite)")
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
