"""The pipeline loop itself: failures anywhere end the run with a result, never a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import etrmflow
from etrmflow.compile import compile_plan
from etrmflow.components import Page, Transport
from etrmflow.config.project import open_project
from etrmflow.engine.runner import RunOptions, run_pipeline
from etrmflow.errors import FatalFetchError
from etrmflow.plugins import Registry, make_plugin_manager
from etrmflow.results import Status
from etrmflow.secrets import SecretStore


class _ExplodingTransport(Transport):
    """Fails after one page, the way a bug in a plugin would.

    Example::

        type: exploding
    """

    type_name = "exploding"
    error: BaseException = RuntimeError("boom")

    def __init__(self, options: Any, **kwargs: Any) -> None:
        super().__init__(options)
        self.counters = type("Counters", (), {"requests": 1, "retries": 0, "bytes": 0})()

    async def __aenter__(self) -> "_ExplodingTransport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def pages(self, stream: Any, start: Any = None) -> AsyncIterator[Page]:
        yield Page(connector="c", stream="s", partition="", index=0, method="GET", url="u", status=200,
                   byte_count=2, sha256="0" * 64, records=[], fetched_at="", elapsed_ms=0.0)
        raise self.error


class _Plugin:
    @etrmflow.hookimpl
    def etrmflow_transport_types(self) -> list[type]:
        return [_ExplodingTransport]


def _plan(tmp_path: Path, registry: Registry) -> Any:
    repo = Path(__file__).parents[1]
    (tmp_path / "connectors").mkdir()
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "trade.yml").write_text((repo / "contracts" / "trade.yml").read_text())
    (tmp_path / "connectors" / "c.yml").write_text(
        "name: c\ntype: exploding\nbase_url: http://127.0.0.1:9\nstreams: {s: {path: /x}}\n")
    (tmp_path / "pipelines" / "p.yml").write_text(
        "name: p\nsource: {connector: c, stream: s}\ncontract: trade\n"
        "sinks: [{type: csv, path: out.csv}]\n")
    project = open_project(tmp_path / "pipelines" / "p.yml", registry=registry)
    return compile_plan(project, [project.resolve(tmp_path / "pipelines" / "p.yml")])


def _run(tmp_path: Path, error: BaseException) -> Any:
    registry = Registry(make_plugin_manager(load_entry_points=False, extra_plugins=[_Plugin()]))
    plan = _plan(tmp_path, registry)
    _ExplodingTransport.error = error
    options = RunOptions(secrets=SecretStore(environ={}))
    return asyncio.run(asyncio.wait_for(run_pipeline(plan, plan.pipelines[0], registry, options), timeout=20))


def test_a_bug_in_a_transport_surfaces_instead_of_hanging(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        _run(tmp_path, RuntimeError("boom"))
    assert not (tmp_path / "out.csv").exists()  # a failed run never replaces the output


def test_a_fetch_failure_after_some_pages_is_a_failed_result(tmp_path: Path) -> None:
    result = _run(tmp_path, FatalFetchError("GET /x answered 404"))
    assert result.status is Status.FAILED
    assert (result.error, result.error_type, result.counts.pages) == ("GET /x answered 404", "FatalFetchError", 1)
    assert not (tmp_path / "out.csv").exists()


def test_a_validator_answering_for_fewer_records_fails_loudly() -> None:
    """Otherwise the records it skipped would pass unchecked into the sinks."""
    from etrmflow.components import Validator
    from etrmflow.engine.validation import validate_records

    class Lazy(Validator):
        type_name = "lazy"

        def validate(self, records: list[Any]) -> list[list[Any]]:
            return [[]]  # one verdict, whatever the batch

    with pytest.raises(ValueError):
        validate_records([Lazy({}, context=None)], [{"a": 1}, {"a": 2}])  # type: ignore[arg-type]
