"""End-to-end throughput and memory: fetch, validate, transform and load N sandbox trades.

    python benchmarks/bench_end_to_end.py [--records 100000] [--repeats 3] [--page-size 1000]

The sandbox vendor runs in its own process (as a real vendor would). In the same run, a bare
aiohttp loop fetches and decodes the same pages: the baseline that shows what the network and
JSON decoding alone cost. Prints medians of the repeats: records a second for both, their ratio,
and the peak RSS of the etrmflow run (a fresh process each time).
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

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sandbox(records: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "etrmflow", "sandbox", "--port", str(port),
                                "--trades", str(records)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, url
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


def run_pipeline(folder: Path, url: str) -> tuple[float, int, float]:
    """Seconds, records fetched and peak RSS (MB) of one `etrmflow run` in a fresh process."""
    code = ("import resource, sys; from etrmflow.cli.main import run_cli; rc = run_cli(['run', "
            "'pipelines/trades.yml']); print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "SANDBOX_URL": url})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    results = json.loads((folder / "target" / "run_results.json").read_text())
    rss_kb = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("RSS")))
    return seconds, results["pipelines"][0]["counts"]["fetched"], rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    sandbox, url = start_sandbox(args.records)
    try:
        bare, engine, memory = [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fetched = asyncio.run(bare_fetch(url, args.page_size))
            bare.append(fetched / (time.perf_counter() - started))
            with tempfile.TemporaryDirectory() as folder:
                write_project(Path(folder), args.page_size)
                seconds, fetched, rss = run_pipeline(Path(folder), url)
            engine.append(fetched / seconds)
            memory.append(rss)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    print(f"records: {args.records}, page size {args.page_size}, median of {args.repeats} runs")
    print(f"bare aiohttp fetch + decode   {statistics.median(bare):>10,.0f} records/s")
    print(f"etrmflow run (end to end)     {statistics.median(engine):>10,.0f} records/s "
          f"({statistics.median(engine) / statistics.median(bare):.2f}x of bare fetch; process start included)")
    print(f"etrmflow peak RSS             {statistics.median(memory):>10,.0f} MB")


if __name__ == "__main__":
    main()
