"""Test kit: run the real etrmflow CLI in a temporary project against the sandbox vendor.

A pytest plugin. Load it from your ``conftest.py``::

    pytest_plugins = ["etrmflow.testing"]

and test your own connectors, contracts and pipelines offline, over real HTTP on 127.0.0.1::

    def test_trades_load_exactly_once(etrmflow_project, sandbox_vendor_factory):
        vendor = sandbox_vendor_factory(trades=60, faults=["503:at=2"])
        etrmflow_project.copy_from(Path(__file__).parents[1], "connectors", "contracts", "pipelines")
        result = etrmflow_project.run("run", "pipelines/acme_trades.yml",
                                      env={"ACME_BASE_URL": vendor.base_url})
        assert result.exit_code == 0, result.output
        etrmflow_project.assert_loaded_exactly(expected_trades(vendor.config), table="trades",
                                               pipeline="acme_trades")

Fixtures:

* ``etrmflow_project``: an :class:`EtrmflowProject` in ``tmp_path``;
* ``sandbox_vendor``: a :class:`~etrmflow.sandbox.ThreadedSandbox` with the default dataset
  (250 trades, seed 7), stopped after the test;
* ``sandbox_vendor_factory``: ``factory(config=None, *, faults=(), **fields)`` starts a sandbox
  with your own :class:`~etrmflow.sandbox.SandboxConfig` fields (``trades=``, ``token_ttl=``,
  ``client_secret=``, ``api_key=``...); every one it started is stopped after the test;
* ``scripted_vendor``: ``factory(answer)`` starts a :class:`ScriptedVendor` on 127.0.0.1 that
  answers each request with ``answer(request)``, for what the sandbox does not serve
  (malformed bodies, loops, repeated pages); every one it started is stopped after the test;
* ``postgresql_database`` / ``postgresql_dsn``: a new, empty database (or its DSN) on a
  PostgreSQL server the test session starts itself (``postgresql_server``; see
  :mod:`etrmflow.testing.postgres` for where its binaries come from).

:func:`expected_trades` and :func:`expected_settlements` say which records of a sandbox
dataset are valid and which are broken on purpose (and how), so a test can assert that every
record ended in exactly one place.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from etrmflow.sandbox import SandboxConfig, ThreadedSandbox, parse_faults
from etrmflow.secrets import REDACTOR
from etrmflow.testing.expected import (
    SANDBOX_KEY_AUTH,
    ExpectedRecords,
    expected_settlements,
    expected_trades,
    sandbox_connector,
)
from etrmflow.testing.postgres import (
    PostgresDatabase,
    PostgresServer,
    postgresql_database,
    postgresql_dsn,
    postgresql_server,
)
from etrmflow.testing.project import CliResult, EtrmflowProject
from etrmflow.testing.scripted import Answer, ScriptedRequest, ScriptedVendor

__all__ = [
    "SANDBOX_KEY_AUTH",
    "Answer",
    "CliResult",
    "EtrmflowProject",
    "ExpectedRecords",
    "PostgresDatabase",
    "PostgresServer",
    "SandboxFactory",
    "ScriptedRequest",
    "ScriptedVendor",
    "etrmflow_project",
    "expected_settlements",
    "expected_trades",
    "postgresql_database",
    "postgresql_dsn",
    "postgresql_server",
    "sandbox_connector",
    "sandbox_vendor",
    "sandbox_vendor_factory",
    "scripted_vendor",
]


SandboxFactory = Callable[..., ThreadedSandbox]
"""``factory(config=None, *, faults=(), **SandboxConfig fields) -> ThreadedSandbox``."""


@pytest.fixture(autouse=True)
def _secrets_forgotten_after_each_test() -> Iterator[None]:
    """The CLI runs in the test's process, where every secret it resolves is masked from then on:
    a test's secrets (a short one, a token) are forgotten after it, so they never mask or
    quarantine another test's data."""
    with REDACTOR.scoped():
        yield


@pytest.fixture
def etrmflow_project(tmp_path: Path) -> EtrmflowProject:
    """An empty etrmflow project in ``tmp_path/project`` (with an ``etrmflow.yml``)."""
    root = tmp_path / "project"
    root.mkdir()
    project = EtrmflowProject(root)
    project.write({"etrmflow.yml": "name: test_project\n"})
    return project


@pytest.fixture
def sandbox_vendor_factory() -> Iterator[SandboxFactory]:
    """Start sandbox vendors with custom settings; all are stopped after the test.

    ::

        vendor = sandbox_vendor_factory(trades=60, token_ttl=2, faults=["expire-tokens:at=3"])
        vendor = sandbox_vendor_factory(SandboxConfig(seed=3), client_secret="s3cret-value")
    """
    started: list[ThreadedSandbox] = []

    def start(config: SandboxConfig | None = None, *, faults: Any = (), **fields: Any) -> ThreadedSandbox:
        changes = {**fields, **({"faults": parse_faults(faults)} if faults else {})}
        vendor = ThreadedSandbox(dataclasses.replace(config or SandboxConfig(), **changes))
        vendor.start()
        started.append(vendor)
        return vendor

    yield start
    for vendor in reversed(started):
        vendor.stop()


@pytest.fixture
def scripted_vendor() -> Iterator[Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]]:
    """Start vendors that answer what the test scripts (see :mod:`etrmflow.testing.scripted`);
    all are stopped after the test::

        vendor = scripted_vendor(lambda request: b'{"trades": [{"price": 40.4500000000000001}]}')
    """
    started: list[ScriptedVendor] = []

    def start(answer: Callable[[ScriptedRequest], Any]) -> ScriptedVendor:
        started.append(ScriptedVendor(answer))
        return started[-1]

    yield start
    for vendor in reversed(started):
        vendor.close()


@pytest.fixture
def sandbox_vendor() -> Iterator[ThreadedSandbox]:
    """The sandbox vendor with its default dataset on 127.0.0.1; ``.base_url`` is its URL."""
    with ThreadedSandbox(SandboxConfig()) as vendor:
        yield vendor
