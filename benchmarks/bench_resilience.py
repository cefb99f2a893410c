"""Fault-free overhead of etrmflow's fetch layer against a bare aiohttp loop, same pages, same run.

    python benchmarks/bench_resilience.py [--records 200000] [--page-size 1000] [--repeats 5]

The sandbox vendor runs in its own process. Both sides walk the same cursor-paginated trades
and decode every page; etrmflow's side goes through the transport with everything switched on
(auth, retry policy, circuit breaker, request quota, request-time templates, redaction, page
hashing), but no validation or sinks. Runs alternate (bare, etrmflow, bare, ...) so that machine
noise hits both; prints medians and the overhead ratio. Goal: within 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_end_to_end import bare_fetch, start_sandbox  # noqa: E402

from etrmflow.clock import Clock  # noqa: E402
from etrmflow.engine.http import HttpTransport  # noqa: E402
from etrmflow.plan import (  # noqa: E402
    BreakerPolicy, ComponentPlan, ConnectorPlan, RatePolicy, RetryPolicy, StreamPlan, TimeoutPolicy,
)
from etrmflow.plugins import Registry  # noqa: E402
from etrmflow.components import Kind  # noqa: E402
from etrmflow.secrets import SecretStore  # noqa: E402


async def etrmflow_fetch(url: str, page_size: int) -> int:
    registry = Registry.default(load_entry_points=False)
    connector = ConnectorPlan(name="vendor", type="http", file="", base_url=url,
                              auth=ComponentPlan(type="bearer", options={"token": "${secret:TOKEN}"}),
                              headers={}, params={}, tls_verify=True, ca_bundle=None, concurrency=4,
                              rate_limit=(RatePolicy(requests=100_000, per=1.0),))
    stream = StreamPlan(name="trades", method="GET", path="/api/v2/trades", params={"limit": page_size},
                        headers={}, body=None, records="$.trades",
                        paginator=ComponentPlan(type="cursor", options={"cursor": "$.next_cursor"}),
                        concurrency=4, timeout=TimeoutPolicy(), retry=RetryPolicy(), breaker=BreakerPolicy())
    auth = registry.get(Kind.AUTH, "bearer")(connector.auth.options)
    transport = HttpTransport({}, connector=connector, auth=auth,
                              secrets=SecretStore(environ={"TOKEN": "sandbox-token"}), clock=Clock(), vars={},
                              paginator_factory=lambda c: registry.get(Kind.PAGINATOR, c.type)(c.options))
    count = 0
    async with transport:
        async for page in transport.pages(stream):
            count += len(page.records)
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sandbox, url = start_sandbox(args.records)
    try:
        asyncio.run(bare_fetch(url, args.page_size))  # warm the sandbox's caches for both sides
        bare, ours = [], []
        for _ in range(args.repeats):
            for results, fetch in ((bare, bare_fetch), (ours, etrmflow_fetch)):
                started = time.perf_counter()
                count = asyncio.run(fetch(url, args.page_size))
                assert count == args.records, count
                results.append(time.perf_counter() - started)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    base, mine = statistics.median(bare), statistics.median(ours)
    print(f"records: {args.records}, page size {args.page_size}, median of {args.repeats} alternating runs")
    print(f"bare aiohttp loop     {base:7.3f}s  {args.records / base:>10,.0f} records/s")
    print(f"etrmflow transport    {mine:7.3f}s  {args.records / mine:>10,.0f} records/s")
    print(f"overhead              {mine / base - 1:+7.1%}")


if __name__ == "__main__":
    main()
