"""The built-in sandbox vendor: a realistic ETRM API over real HTTP on loopback.

It serves a deterministic, seeded trade and settlement dataset through OAuth2 (client
credentials and password grants), API keys and static tokens; one endpoint per pagination
style; and injects faults on demand (throttling, 5xx, drops, slow answers, expiring tokens,
malformed bodies). The example pipeline, the test suite and the benchmarks all run against it::

    from etrmflow.sandbox import SandboxConfig, ThreadedSandbox

    with ThreadedSandbox(SandboxConfig.from_url("sandbox://acme?trades=500&fault=503:every=4")) as vendor:
        print(vendor.base_url, vendor.stats())

See docs/sandbox.md for the API, the config keys and the fault specs.
"""

from etrmflow.sandbox.app import build_app, sandbox_state
from etrmflow.sandbox.config import SandboxConfig
from etrmflow.sandbox.data import (
    SETTLEMENT_DEFECTS,
    TRADE_DEFECTS,
    is_invalid_settlement,
    is_invalid_trade,
    settlement,
    trade,
)
from etrmflow.sandbox.faults import FAULT_KINDS, FaultRule, parse_faults
from etrmflow.sandbox.server import SandboxServer, ThreadedSandbox, serve

__all__ = [
    "FAULT_KINDS",
    "SETTLEMENT_DEFECTS",
    "TRADE_DEFECTS",
    "FaultRule",
    "SandboxConfig",
    "SandboxServer",
    "ThreadedSandbox",
    "build_app",
    "is_invalid_settlement",
    "is_invalid_trade",
    "parse_faults",
    "sandbox_state",
    "serve",
    "settlement",
    "trade",
]
