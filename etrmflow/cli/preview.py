"""A pipeline's first request, built as the HTTP transport builds it and sent nowhere.

Used by ``etrmflow run --dry-run`` (print it) and ``etrmflow debug`` (send it once). Every value
that carries a credential is masked before it is shown: headers and parameters the auth component
set, anything holding a ``${secret:NAME}`` marker, and parameters whose names look like keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin

from etrmflow.components import HttpClient, Paginator, Request, Response
from etrmflow.engine.http import stream_windows
from etrmflow.engine.runner import RunOptions, build_transport
from etrmflow.plan import ConnectorPlan, Plan, StreamPlan
from etrmflow.plugins import Registry
from etrmflow.secrets import MASK, SENSITIVE_PARAMS, SecretStore, redact, redact_url
from etrmflow.templating import SECRET_MARKER

TOKEN_PLACEHOLDER = "<token>"


class WouldSend(Exception):
    """Raised instead of sending: the auth component wanted the network (a token request)."""

    def __init__(self, request: Request) -> None:
        super().__init__(request.url)
        self.request = request


class NoNetwork(HttpClient):
    """The client handed to auth in a dry run: it refuses to send anything."""

    async def send(self, request: Request) -> Response:
        raise WouldSend(request)


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstRequest:
    """The first request of a stream with the auth that needs no network applied."""

    request: Request
    paginator: Paginator
    credential_names: frozenset[str]
    """Header and parameter names the auth component set: always masked."""
    token_request: Request | None = None
    """The token request an OAuth component would send first (not sent)."""


def first_request(transport: Any, stream: StreamPlan) -> tuple[Request, Paginator]:
    """The stream's first request (its first date window's, for windowed streams), rendered."""
    return transport.first_request(stream, stream_windows(stream)[0])


async def prepare(transport: Any, stream: StreamPlan) -> FirstRequest:
    """The first request with credentials in place, without touching the network."""
    request, paginator = first_request(transport, stream)
    before = {**request.headers, **request.params}
    try:
        applied = await transport.auth.apply(request.copy(), NoNetwork())
        token_request = None
    except WouldSend as exc:
        applied, token_request = request.copy(), exc.request
        applied.headers["Authorization"] = f"Bearer {TOKEN_PLACEHOLDER}"
    after = {**applied.headers, **applied.params}
    changed = frozenset(name for name, value in after.items() if before.get(name) != value)
    return FirstRequest(request=applied, paginator=paginator, credential_names=changed,
                        token_request=token_request)


def absolute(base_url: str, url: str) -> str:
    """``url`` on ``base_url``; by hand for ``sandbox://``, which urljoin does not know."""
    if "://" in url:
        return url
    if base_url.startswith(("http://", "https://")):
        return urljoin(base_url.rstrip("/") + "/", url.lstrip("/"))
    return base_url.rstrip("/") + "/" + url.lstrip("/")


def shown_value(name: str, value: Any, credential_names: frozenset[str]) -> str:
    text = str(value)
    if (name in credential_names or name.lower() in SENSITIVE_PARAMS or name.lower() == "authorization"
            or SECRET_MARKER.search(text)):
        scheme = text.split(" ", 1)[0] if " " in text and name.lower() == "authorization" else ""
        return f"{scheme} {MASK}".strip()
    return redact(text)


def shown_url(base_url: str, prepared: FirstRequest) -> str:
    request = prepared.request
    params = [(k, shown_value(k, v, prepared.credential_names)) for k, v in request.params.items()]
    url = SECRET_MARKER.sub(MASK, absolute(base_url, request.url))
    query = urlencode(params, safe="*")
    return redact_url(f"{url}{'&' if '?' in url else '?'}{query}" if query else url)


def shown_headers(prepared: FirstRequest) -> list[str]:
    request = prepared.request
    headers = {"User-Agent": "etrmflow", **request.headers}
    lines = [f"{k}: {shown_value(k, v, prepared.credential_names)}" for k, v in headers.items()]
    if request.basic_auth is not None:
        lines.append(f"Authorization: Basic {MASK}")
    return lines


def describe_request(connector: ConnectorPlan, prepared: FirstRequest, base_url: str | None = None) -> list[str]:
    base = base_url or connector.base_url
    lines = [f"{prepared.request.method} {shown_url(base, prepared)}"]
    if prepared.token_request is not None:
        token_url = redact_url(absolute(base, prepared.token_request.url))
        lines.insert(0, f"first: POST {token_url} for a token ({connector.auth.type}; not requested in a dry run)")
    lines += [f"  {line}" for line in shown_headers(prepared)]
    if prepared.request.json is not None:
        lines.append(f"  body: {redact(SECRET_MARKER.sub(MASK, str(prepared.request.json)))}")
    return lines


async def describe_first_requests(plan: Plan, registry: Registry, secrets: SecretStore) -> str:
    """``run --dry-run``: each pipeline's first request, credentials masked; nothing is sent."""
    options = RunOptions(secrets=secrets)
    out: list[str] = []
    for pipeline in plan.pipelines:
        transport = build_transport(plan, pipeline, registry, options)
        out.append(f"{pipeline.name} ({pipeline.connector.name}.{pipeline.stream.name}):")
        if not hasattr(transport, "first_request"):
            out.append(f"  transport type '{pipeline.connector.type}' cannot show its requests")
            continue
        prepared = await prepare(transport, pipeline.stream)
        out += [f"  {line}" for line in describe_request(pipeline.connector, prepared)]
    out.append(f"Dry run: {len(plan.pipelines)} pipeline(s) checked; nothing was sent.")
    return "\n".join(out)
