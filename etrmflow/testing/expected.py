"""What the sandbox vendor serves: expected record ids, and a connector that reads them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from etrmflow.sandbox import SandboxConfig
from etrmflow.sandbox.data import (
    is_invalid_settlement,
    is_invalid_trade,
    settlement_id,
    trade_id,
)

# --- what a sandbox dataset holds --------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectedRecords:
    """The ids of a sandbox dataset: the valid ones, and the broken ones with their defect."""

    valid: frozenset[str]
    invalid: Mapping[str, str]

    @property
    def total(self) -> int:
        return len(self.valid) + len(self.invalid)


def _expected(count: int, make_id: Callable[[int], str], defect: Callable[[int], str | None]) -> ExpectedRecords:
    valid, invalid = set(), {}
    for i in range(count):
        found = defect(i)
        if found is None:
            valid.add(make_id(i))
        else:
            invalid[make_id(i)] = found
    return ExpectedRecords(valid=frozenset(valid), invalid=invalid)


def expected_trades(config: SandboxConfig | None = None) -> ExpectedRecords:
    """Trade ids a sandbox with this config serves: which are valid, which broken and how.

    ::

        expected = expected_trades(SandboxConfig(trades=60))
        assert len(expected.invalid) == 3
    """
    config = config or SandboxConfig()
    return _expected(config.trades, trade_id, lambda i: is_invalid_trade(i, config.seed))


def expected_settlements(config: SandboxConfig | None = None) -> ExpectedRecords:
    """Settlement ids a sandbox with this config serves (no date filter), valid and broken."""
    config = config or SandboxConfig()
    return _expected(config.settlements, settlement_id, lambda i: is_invalid_settlement(i, config.seed))


SANDBOX_KEY_AUTH = "{type: api_key, in: header, name: X-API-Key, value: \"{{ secret('SANDBOX_KEY') }}\"}"


def sandbox_connector(*, page_size: int = 100, auth: str = SANDBOX_KEY_AUTH, name: str = "vendor") -> str:
    """A connector reading the sandbox vendor's cursor-paginated trades (stream ``trades``).

    Its ``base_url`` is ``{{ env_var('SANDBOX_URL') }}``, and its default auth is the sandbox's
    API key as ``secret('SANDBOX_KEY')``. Example::

        project.write({"connectors/vendor.yml": sandbox_connector(page_size=20)})
        project.env.update(SANDBOX_URL=sandbox_vendor.base_url, SANDBOX_KEY="sandbox-key")
    """
    return (f"name: {name}\n"
            "base_url: \"{{ env_var('SANDBOX_URL') }}\"\n"
            f"auth: {auth}\n"
            "streams:\n"
            "  trades:\n"
            "    path: /api/v2/trades\n"
            f"    params: {{limit: {page_size}}}\n"
            "    records: $.trades\n"
            "    paginator: {type: cursor, cursor: $.next_cursor, param: cursor}\n")
