"""``etrmflow debug CONNECTOR``: connect, authenticate, fetch one page, and say which step failed.

Each step prints one ``OK``/``FAIL`` line; the first failure stops the walk, because every later
step needs the earlier ones (no token, no data request).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import click

from etrmflow.cli.main import cli, parse_vars, registry
from etrmflow.cli.preview import first_request, shown_value
from etrmflow.clock import Clock
from etrmflow.compile import compile_connector, compile_stream
from etrmflow.components import Kind, Response
from etrmflow.config.check import did_you_mean
from etrmflow.config.preflight import missing_secrets
from etrmflow.config.project import Loaded, Project, open_project_at
from etrmflow.engine.http import records_at
from etrmflow.engine.validation import build_component
from etrmflow.errors import ConfigError, EtrmflowError, ExitCode, SecretMissing
from etrmflow.jsonpath import MISSING, compile_path, extract
from etrmflow.plan import ConnectorPlan, StreamPlan
from etrmflow.secrets import SecretStore, redact, redact_url


class StepFailed(Exception):
    """A check failed; its message is the explanation shown on the FAIL line."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def say(ok: bool, step: str, message: str) -> None:
    click.echo(f"{'OK  ' if ok else 'FAIL'} {step:<10} {redact(message)}")


@cli.command()
@click.argument("connector")
@click.option("--stream", "stream_name", metavar="NAME", help="The stream to request (default: the first one).")
@click.option("--vars", "vars_text", metavar="YAML", help="Variables for var(), as for run.")
@click.pass_obj
def debug(state: Any, connector: str, stream_name: str | None, vars_text: str | None) -> int:
    """Check a connector: connect, authenticate, fetch one page of a stream, explain what failed."""
    project = open_project_at(Path.cwd(), registry=registry(), cli_vars=parse_vars(vars_text))
    state.target_dir = project.target_dir
    loaded = load_connector(project, connector)
    plan = compile_connector(loaded)
    stream = pick_stream(loaded, plan, stream_name)
    secrets = SecretStore(environ=os.environ, defaults=project.secret_defaults)
    issues = missing_secrets(loaded, secrets)
    if issues:
        raise SecretMissing(issues)
    click.echo(f"connector {plan.name} ({plan.file}), stream {stream.name}")
    ok = asyncio.run(diagnose(project, plan, stream, secrets))
    click.echo("All checks passed." if ok else "Stopped at the first failed check.")
    return ExitCode.OK if ok else ExitCode.RUN_FAILED


def load_connector(project: Project, name: str) -> Loaded:
    path = project.find("connectors", name)
    if path is None:
        hint = did_you_mean(name, project.names("connectors")) or "there are no connector files yet"
        raise click.BadParameter(f"no connector named '{name}' in {project.display(project.root / 'connectors')}/"
                                 f" ({hint})", param_hint="CONNECTOR")
    result = project.load(path, "connector")
    if result.issues or result.loaded is None:
        raise ConfigError(result.issues)
    return result.loaded


def pick_stream(loaded: Loaded, connector: ConnectorPlan, name: str | None) -> StreamPlan:
    streams = list(loaded.data.get("streams") or {})
    if not streams:
        raise click.UsageError(f"connector '{connector.name}' declares no streams to fetch (it is used by "
                               f"write-back sinks only); debug a connector that has a stream")
    name = name or streams[0]
    if name not in streams:
        raise click.BadParameter(f"connector '{connector.name}' has no stream '{name}' "
                                 f"({did_you_mean(name, streams)})", param_hint="--stream")
    stream = compile_stream(loaded.data, {"stream": name}, connector)
    # One attempt: debugging wants the first answer explained, not retried for minutes.
    return dataclasses.replace(stream, retry=dataclasses.replace(stream.retry, max_attempts=1))


def make_transport(project: Project, connector: ConnectorPlan, secrets: SecretStore) -> Any:
    """The connector's transport, as a run builds it (without a run's shared quota and breakers)."""
    registry = project.registry
    cls = registry.get(Kind.TRANSPORT, connector.type)
    if cls is None:
        raise EtrmflowError(f"no transport type '{connector.type}' is registered")
    return cls({}, connector=connector, auth=build_component(registry, Kind.AUTH, connector.auth),
               secrets=secrets, clock=Clock(), vars=project.vars,
               paginator_factory=lambda block: build_component(registry, Kind.PAGINATOR, block))


async def diagnose(project: Project, connector: ConnectorPlan, stream: StreamPlan, secrets: SecretStore) -> bool:
    transport = make_transport(project, connector, secrets)
    try:
        async with transport:
            await check_connect(transport.client.base_url, stream.timeout.connect)
            await check_auth(transport, connector)
            await check_request(transport, stream)
    except StepFailed as failed:
        say(False, failed.step, str(failed))
        return False
    return True


async def check_connect(base_url: str, timeout: float) -> None:
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    started = time.perf_counter()
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError as exc:
        raise StepFailed("dns", f"cannot resolve {host}: {exc.strerror or exc}") from None
    address = infos[0][4][0]
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        reason = ("timed out" if isinstance(exc, asyncio.TimeoutError)
                  else os.strerror(exc.errno).lower() if exc.errno else str(exc))
        raise StepFailed("connect", f"cannot connect to {host}:{port} ({address}): {reason}") from None
    writer.close()
    say(True, "connect", f"{host}:{port} ({address}) in {_ms(started)}")


async def check_auth(transport: Any, connector: ConnectorPlan) -> None:
    """Get a token now when the auth needs one, so that its failure is told apart from the data's."""
    token_url = connector.auth.options.get("token_url")
    if not token_url:
        say(True, "auth", f"{transport.auth.describe()} (no token needed)")
        return
    started = time.perf_counter()
    try:
        await transport.auth.refresh(transport.client)
    except EtrmflowError as exc:
        raise StepFailed("token", f"POST {redact_url(transport.client.absolute(token_url))}: {exc}") from None
    say(True, "token", f"POST {redact_url(transport.client.absolute(token_url))}: token received in {_ms(started)}")


async def check_request(transport: Any, stream: StreamPlan) -> None:
    request, paginator = first_request(transport, stream)
    started = time.perf_counter()
    query = urlencode([(k, shown_value(k, v, frozenset())) for k, v in request.params.items()], safe="*")
    shown = f"{request.method} {redact_url(transport.client.absolute(request.url) + (f'?{query}' if query else ''))}"
    try:
        raw, body, _attempts = await transport.fetch(request, stream)
    except EtrmflowError as exc:
        raise StepFailed("request", str(exc)) from None
    say(True, "request", f"{shown} answered {raw.status} in {_ms(started)} ({len(raw.body)} bytes)")
    records = checkrecords_at(body, stream, raw)
    following = paginator.next(request, Response(status=raw.status, headers=raw.headers, body=body, url=raw.url),
                               records)
    if following is None:
        say(True, "paging", f"{stream.paginator.type}: this was the last page")
        return
    query = urlencode({k: v for k, v in following.params.items()})
    say(True, "paging", f"{stream.paginator.type}: next request {following.method} "
                        f"{redact_url(following.url + ('?' + query if query else ''))}")


def checkrecords_at(body: Any, stream: StreamPlan, raw: Any) -> list[Any]:
    if extract(body, compile_path(stream.records)) is MISSING:
        keys = ", ".join(sorted(body)) if isinstance(body, dict) else f"none (the body is a {type(body).__name__})"
        raise StepFailed("records", f"records path {stream.records} not found; top-level keys are {keys}")
    try:
        records = records_at(body, compile_path(stream.records), stream.records, raw,
                             one_object=stream.paginator.type == "single")
    except EtrmflowError as exc:
        raise StepFailed("records", str(exc)) from None
    say(True, "records", f"{len(records)} record(s) found at {stream.records}")
    return records


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"

