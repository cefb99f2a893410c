"""The built-in REST transport: aiohttp, one pooled session per connector.

Error classification happens here and only here: a status or exception becomes a
RetriableFetchError, FatalFetchError or AuthError, and the class decides what happens next.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote_plus, urlencode, urljoin

import aiohttp
import orjson
from jinja2 import TemplateError

from etrmflow.clock import Clock, utc_timestamp
from etrmflow.components import Auth, HttpClient, Page, Paginator, Request, Response, Transport
from etrmflow.engine.retry import Retrier, parse_retry_after
from etrmflow.errors import AuthError, FatalFetchError, FetchError, RetriableFetchError
from etrmflow.jsonpath import MISSING, compile_path, extract
from etrmflow.plan import ConnectorPlan, RetryPolicy, StreamPlan
from etrmflow.secrets import SecretStore, redact, redact_url
from etrmflow.templating import MissingValue, TemplateEnvironment, make_functions, render_tree

log = logging.getLogger("etrmflow.http")
_BODY_EXCERPT = 200


@dataclass(slots=True)
class FetchCounters:
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    auth_refreshes: int = 0


class FetchTimeout(RetriableFetchError):
    """The request timed out (retried only while ``retry.on_timeout`` is true)."""


class ConnectionFailed(RetriableFetchError):
    """The connection was refused, dropped or cut mid-body (retried while ``retry.on_connection_error``)."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


class HttpSession(HttpClient):
    """Sends requests for one connector; secrets are resolved here, at the last moment."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, secrets: SecretStore,
                 clock: Clock, counters: FetchCounters, ssl_context: ssl.SSLContext | bool) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/") + "/"
        self.secrets = secrets
        self.clock = clock
        self.counters = counters
        self.ssl = ssl_context

    def absolute(self, url: str) -> str:
        return url if "://" in url else urljoin(self.base_url, url.lstrip("/"))

    async def send_raw(self, request: Request, timeout: aiohttp.ClientTimeout | None = None) -> RawResponse:
        url = _without_keys(self.absolute(request.url), request.params)
        shown = _shown(url, request.params)
        resolve = self.secrets.resolve
        kwargs: dict[str, Any] = {
            "params": {k: resolve(str(v)) for k, v in request.params.items()},
            "headers": {k: resolve(str(v)) for k, v in request.headers.items()},
            "ssl": self.ssl,
        }
        if timeout is not None:
            kwargs["timeout"] = timeout
        if request.json is not None:
            kwargs["data"] = orjson.dumps(request.json)
            kwargs["headers"].setdefault("Content-Type", "application/json")
        if request.data is not None:
            kwargs["data"] = {k: resolve(str(v)) for k, v in request.data.items()}
        if request.basic_auth is not None:
            kwargs["headers"]["Authorization"] = _basic(*(resolve(part) for part in request.basic_auth))
        self.counters.requests += 1
        try:
            async with self.session.request(request.method, resolve(url), **kwargs) as response:
                body = await response.read()
                self.counters.bytes += len(body)
                return RawResponse(status=response.status, headers=dict(response.headers), body=body,
                                   url=str(response.url))
        except asyncio.TimeoutError:
            raise FetchTimeout(f"{request.method} {shown} timed out", url=shown) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            # A payload error is a body cut short in transit: the same as a dropped connection.
            raise ConnectionFailed(f"{request.method} {shown} failed: connection error: "
                                   f"{redact(str(exc)) or type(exc).__name__}", url=shown) from None
        except aiohttp.ClientError as exc:
            raise FatalFetchError(f"{request.method} {shown} failed: {redact(str(exc))}", url=shown) from None

    async def send(self, request: Request) -> Response:
        """One attempt, JSON decoded; used by auth for token requests."""
        raw = await self.send_raw(request)
        return Response(status=raw.status, headers=raw.headers, body=_decode_lenient(raw.body), url=raw.url)


def _without_keys(url: str, params: Mapping[str, Any]) -> str:
    """The URL without the query keys ``params`` sets again, so they are sent once, as params say.

    A vendor's next link echoes our query (an api_key, the page size); sent as is, each page
    would add one more copy. Other pairs keep their exact encoding: cursors are opaque.
    """
    base, mark, query = url.partition("?")
    if not mark or not params:
        return url
    kept = [pair for pair in query.split("&") if unquote_plus(pair.split("=", 1)[0]) not in params]
    return f"{base}?{'&'.join(kept)}" if kept else base


def _shown(url: str, params: Mapping[str, Any]) -> str:
    """The URL as sent, query included (which page failed matters), credentials masked."""
    if params:
        url += ("&" if "?" in url else "?") + urlencode({k: str(v) for k, v in params.items()})
    return redact_url(url)


def _basic(user: str, password: str) -> str:
    # Built by hand: aiohttp's BasicAuth helper is deprecated (aiohttp 4) and absent from 3.9.
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


def _decode_lenient(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def transport_error(error: RetriableFetchError, retry: RetryPolicy) -> FetchError:
    """The error to raise for a timeout or connection failure: fatal if the policy says no retry."""
    if (isinstance(error, FetchTimeout) and not retry.on_timeout) or (
            isinstance(error, ConnectionFailed) and not retry.on_connection_error):
        return FatalFetchError(f"{error} (not retried: retry.on_"
                               f"{'timeout' if isinstance(error, FetchTimeout) else 'connection_error'} is false)",
                               url=error.url, status=error.status)
    return error


def classify(raw: RawResponse, method: str, retry: RetryPolicy, now: Any) -> Any:
    """Decode a response or raise the exception class that decides its fate."""
    shown = redact_url(raw.url)
    if raw.status == 401:
        raise AuthError(f"{method} {shown} answered 401 Unauthorized: {_excerpt(raw.body)}", url=shown, status=401)
    if raw.status in retry.on_status:
        wait = parse_retry_after(raw.headers.get("Retry-After"), now)
        raise RetriableFetchError(f"{method} {shown} answered {raw.status}", url=shown, status=raw.status,
                                  retry_after=wait)
    if raw.status >= 400:
        raise FatalFetchError(f"{method} {shown} answered {raw.status}: {_excerpt(raw.body)}", url=shown,
                              status=raw.status)
    try:
        return orjson.loads(raw.body) if raw.body else None
    except orjson.JSONDecodeError as exc:
        # A truncated body is usually a broken transfer: worth another attempt.
        raise RetriableFetchError(f"{method} {shown} returned malformed JSON ({exc})", url=shown,
                                  status=raw.status) from None


def _excerpt(body: bytes) -> str:
    text = body[:_BODY_EXCERPT].decode("utf-8", "replace").strip()
    return redact(text + ("..." if len(body) > _BODY_EXCERPT else "")) or "(empty body)"


class HttpTransport(Transport):
    """REST over HTTP(S) with aiohttp: pooled connections, retries, auth, pagination.

    Selected by a connector's ``type: http`` (the default). ``base_url: sandbox://NAME?...``
    starts the built-in sandbox vendor in-process on a free loopback port.

    Example::

        name: acme_etrm
        type: http
        base_url: "{{ env_var('ACME_BASE_URL', 'sandbox://acme') }}"
        tls: {verify: true}
    """

    type_name: ClassVar[str] = "http"

    def __init__(self, options: Mapping[str, Any], *, connector: ConnectorPlan, auth: Auth,
                 secrets: SecretStore, clock: Clock, vars: Mapping[str, Any],
                 paginator_factory: Any) -> None:
        super().__init__(options)
        self.connector = connector
        self.auth = auth
        self.secrets = secrets
        self.clock = clock
        self.vars = vars
        self.paginator_factory = paginator_factory
        self.counters = FetchCounters()
        self._sandbox: Any = None
        self._session: aiohttp.ClientSession | None = None
        self.client: HttpSession | None = None
        self._templates = TemplateEnvironment()

    async def __aenter__(self) -> HttpTransport:
        base_url = self.connector.base_url
        if base_url.startswith("sandbox://"):
            base_url = await self._start_sandbox(base_url)
        connector = aiohttp.TCPConnector(limit=self.connector.concurrency, ssl=self._ssl())
        self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False,
                                              headers={"User-Agent": "etrmflow"})
        self.client = HttpSession(self._session, base_url=base_url, secrets=self.secrets, clock=self.clock,
                                  counters=self.counters, ssl_context=self._ssl())
        self._limit = asyncio.Semaphore(self.connector.concurrency)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._sandbox is not None:
            await self._sandbox.stop()

    async def _start_sandbox(self, url: str) -> str:
        from etrmflow.sandbox import SandboxConfig, SandboxServer

        self._sandbox = SandboxServer(SandboxConfig.from_url(url))
        started = await self._sandbox.start()
        log.info("started the sandbox vendor for %s at %s", url.split("?")[0], started)
        return started

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.connector.tls_verify:
            log.warning("TLS verification is OFF for connector %s (tls.verify: false)", self.connector.name)
            return False
        if self.connector.ca_bundle:
            return ssl.create_default_context(cafile=self.connector.ca_bundle)
        return True

    async def pages(self, stream: StreamPlan) -> AsyncIterator[Page]:
        """Walk every page of a stream, in order."""
        assert self.client is not None, "use the transport as an async context manager"
        paginator: Paginator = self.paginator_factory(stream.paginator)
        records_path = compile_path(stream.records)
        functions = make_functions(vars=self.vars, environ=self.secrets.environ)
        request: Request | None = paginator.first(Request(
            method=stream.method, url=stream.path, params=dict(stream.params),
            headers={k: str(v) for k, v in stream.headers.items()}, json=stream.body))
        index = offset = 0
        while request is not None:
            started = time.perf_counter()
            context = {**functions, "page": index + 1, "offset": offset, "cursor": None,
                       **paginator.template_context(request)}
            raw, body, attempts = await self.fetch(self._render(request, context), stream)
            records = _records(body, records_path, stream.records, raw)
            yield Page(connector=self.connector.name, stream=stream.name, partition="", index=index,
                       method=request.method, url=redact_url(raw.url), status=raw.status,
                       byte_count=len(raw.body), sha256=hashlib.sha256(raw.body).hexdigest(), records=records,
                       fetched_at=utc_timestamp(), elapsed_ms=(time.perf_counter() - started) * 1000,
                       attempts=attempts)
            response = Response(status=raw.status, headers=raw.headers, body=body, url=raw.url)
            request = paginator.next(request, response, records)
            index += 1
            offset += len(records)

    def _render(self, request: Request, context: dict[str, Any]) -> Request:
        """The request with its request-time templates (page, cursor, offset) rendered."""
        rendered = request.copy()
        templates = self._templates
        try:
            rendered.url = str(render_tree(templates, request.url, context))
            rendered.params = render_tree(templates, request.params, context)
            rendered.headers = {k: str(v) for k, v in render_tree(templates, request.headers, context).items()}
            rendered.json = render_tree(templates, request.json, context)
        except (TemplateError, MissingValue) as exc:
            raise FatalFetchError(f"a request-time template of this stream failed: {exc}") from None
        return rendered

    async def fetch(self, request: Request, stream: StreamPlan) -> tuple[RawResponse, Any, int]:
        """Send with auth, retries and one credential refresh after a 401."""
        assert self.client is not None
        client = self.client
        timeout = aiohttp.ClientTimeout(total=stream.timeout.total, sock_connect=stream.timeout.connect,
                                        sock_read=stream.timeout.read)
        attempts = 0
        correlation = uuid.uuid4().hex[:12]
        unauthorized = False

        async def attempt() -> tuple[RawResponse, Any]:
            nonlocal attempts, unauthorized
            attempts += 1
            unauthorized = False
            prepared = request.copy()
            prepared.headers.setdefault("X-Request-ID", correlation)
            async with self._limit:
                prepared = await self.auth.apply(prepared, client)
                try:
                    raw = await client.send_raw(prepared, timeout)
                except RetriableFetchError as exc:
                    raise transport_error(exc, stream.retry) from None
            # Only the vendor's 401 to a data request earns a refresh: a token endpoint that
            # refused our credentials will refuse them again.
            unauthorized = raw.status == 401
            return raw, classify(raw, request.method, stream.retry, self.clock.now())

        retrier = Retrier(stream.retry, self.clock, on_retry=self._count_retry)
        label = f"{request.method} {redact_url(client.absolute(request.url))} [request {correlation}]"
        try:
            raw, body = await retrier.run(attempt, method=request.method, label=label)
        except AuthError:
            if not unauthorized or not await self._refresh(client):
                raise
            log.info("credentials refreshed after a 401; retrying %s once", label)
            raw, body = await retrier.run(attempt, method=request.method, label=label)
        return raw, body, attempts

    def _count_retry(self) -> None:
        self.counters.retries += 1

    async def _refresh(self, client: HttpSession) -> bool:
        self.counters.auth_refreshes += 1
        return await self.auth.refresh(client)


def _records(body: Any, path: tuple[str | int, ...], shown_path: str, raw: RawResponse) -> list[Any]:
    value = extract(body, path)
    if value is MISSING:
        keys = ", ".join(sorted(body)) if isinstance(body, dict) else type(body).__name__
        raise FatalFetchError(f"records path {shown_path} not found in the response from "
                              f"{redact_url(raw.url)} (top-level: {keys}); check the stream's records:",
                              url=redact_url(raw.url), status=raw.status)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise FatalFetchError(f"records path {shown_path} holds a {type(value).__name__}, not a list",
                              url=redact_url(raw.url), status=raw.status)
    return value
