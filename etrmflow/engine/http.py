"""The built-in REST transport: aiohttp, one pooled session per connector, pages walked with
auth, retries, a circuit breaker per endpoint and a shared request quota."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import aiohttp
import orjson
from jinja2 import TemplateError

from etrmflow.clock import Clock, utc_timestamp
from etrmflow.components import Auth, Page, Paginator, Request, Response, Transport
from etrmflow.engine.breaker import BreakerBoard
from etrmflow.engine.context import CORRELATION_ID, bound, new_correlation_id
from etrmflow.engine.http_client import (
    NO_DATA,
    FetchCounters,
    HttpSession,
    RawResponse,
    TransportFailure,
    classify,
    transport_error,
)
from etrmflow.engine.ratelimit import RateLimiter
from etrmflow.engine.retry import IDEMPOTENT_METHODS, Retrier
from etrmflow.errors import AuthError, FatalFetchError, FetchError, RetriableFetchError
from etrmflow.jsonpath import MISSING, compile_path, extract
from etrmflow.plan import ConnectorPlan, StreamPlan
from etrmflow.secrets import REDACTOR, SecretStore, redact_url
from etrmflow.templating import (
    MissingValue,
    TemplateEnvironment,
    make_functions,
    render_tree,
    template_texts,
)
from etrmflow.windows import parse_bound, parse_step, render_bound, split

log = logging.getLogger("etrmflow.http")
_BODY_EXCERPT = 200
THROTTLED = 429


_WARNED_TLS_OFF: weakref.WeakSet[BreakerBoard] = weakref.WeakSet()
"""Breaker boards whose connector's TLS warning was logged. A run shares one board per connector
among its pipelines' transports, so the warning comes once per connector and run."""


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
                 paginator_factory: Any, quota: RateLimiter | None = None,
                 breakers: BreakerBoard | None = None) -> None:
        super().__init__(options)
        self.connector = connector
        self.auth = auth
        self.secrets = secrets
        self.clock = clock
        self.vars = vars
        self.paginator_factory = paginator_factory
        self.counters = FetchCounters()
        self.endpoints: set[str] = set()
        """Endpoints this transport called: which of a shared breaker board's transitions are its."""
        # Shared by every pipeline of the run that uses this connector, when the runner passes them.
        self.breakers = breakers if breakers is not None else BreakerBoard(clock)
        self.quota = quota if quota is not None else RateLimiter(list(connector.rate_limit), clock)
        self._stream_limits: dict[str, asyncio.Semaphore] = {}
        self._sandbox: Any = None
        self._session: aiohttp.ClientSession | None = None
        self.client: HttpSession | None = None
        self._templates = TemplateEnvironment()
        self._own_templates: dict[str, frozenset[str]] = {}
        """Per stream name, the template texts its configuration wrote: the only ones rendered."""

    async def __aenter__(self) -> HttpTransport:
        base_url = self.connector.base_url
        if base_url.startswith("sandbox://"):
            base_url = await self._start_sandbox(base_url)
        tls = self._ssl()  # once: it warns when verification is off
        connector = aiohttp.TCPConnector(limit=self.connector.concurrency, ssl=tls)
        self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False,
                                              headers={"User-Agent": "etrmflow"})
        self.client = HttpSession(self._session, base_url=base_url, secrets=self.secrets, clock=self.clock,
                                  counters=self.counters, ssl_context=tls,
                                  max_body=self.connector.max_response_size,
                                  owner=f"connector {self.connector.name} ({self.connector.file})")
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
            if self.breakers not in _WARNED_TLS_OFF:
                _WARNED_TLS_OFF.add(self.breakers)
                log.warning("TLS verification is OFF for connector %s (tls.verify: false)", self.connector.name)
            return False
        if self.connector.ca_bundle:
            try:
                return ssl.create_default_context(cafile=self.connector.ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise FatalFetchError(f"connector {self.connector.name} ({self.connector.file}): tls.ca_bundle "
                                      f"{self.connector.ca_bundle!r} cannot be loaded ({exc}); give the path of "
                                      f"a PEM file of CA certificates, relative to the folder etrmflow runs "
                                      f"in") from None
        return True

    async def pages(self, stream: StreamPlan, start: Mapping[str, Any] | None = None) -> AsyncIterator[Page]:
        """Walk every page of a stream (window by window, if it has windows), in order; from
        ``start`` (a checkpoint) when resuming."""
        assert self.client is not None, "use the transport as an async context manager"
        resume_window = start.get("window") if start else None
        for window in stream_windows(stream):
            index = window["index"] if window else None
            if resume_window is not None and index is not None and index < resume_window:
                continue  # finished before the interruption
            here = start if start is not None and index == resume_window else None
            if here is not None and here["request"] is None:
                continue  # this window had just finished
            async for page in self._walk(stream, window, here):
                yield page

    def first_request(self, stream: StreamPlan,
                      window: dict[str, Any] | None = None) -> tuple[Request, Paginator]:
        """The stream's first request with its request-time templates rendered (a dry run shows
        it), and the paginator that would walk on from it."""
        paginator: Paginator = self.paginator_factory(stream.paginator)
        request = self._initial_request(stream, paginator)
        return self._render(request, self._context(window, paginator, request, 0, 0), stream), paginator

    def _initial_request(self, stream: StreamPlan, paginator: Paginator) -> Request:
        return paginator.first(Request(
            method=stream.method, url=stream.path, params=dict(stream.params),
            headers={k: str(v) for k, v in stream.headers.items()}, json=stream.body))

    def _context(self, window: dict[str, Any] | None, paginator: Paginator, request: Request,
                 index: int, offset: int) -> dict[str, Any]:
        """What request-time templates may use for this request."""
        return {**make_functions(vars=self.vars, environ=self.secrets.environ), "window": window,
                "page": index + 1, "offset": offset, "cursor": None, **paginator.template_context(request)}

    async def _walk(self, stream: StreamPlan, window: dict[str, Any] | None,
                    start: Mapping[str, Any] | None) -> AsyncIterator[Page]:
        paginator: Paginator = self.paginator_factory(stream.paginator)
        records_path = compile_path(stream.records)
        request: Request | None
        if start is not None:
            request, index, offset = start["request"], start["index"], start["offset"]
        else:
            request, index, offset = self._initial_request(stream, paginator), 0, 0
        while request is not None:
            started = time.perf_counter()
            context = self._context(window, paginator, request, index, offset)
            correlation = new_correlation_id()
            raw, body, attempts = await self.fetch(self._render(request, context, stream), stream, correlation)
            if body is NO_DATA:  # the vendor says there is nothing (more) here: an empty last page
                records, following = [], None
                paginator.no_data(request)  # unless it was told more pages follow
            else:
                records = records_at(body, records_path, stream.records, raw,
                                     one_object=stream.paginator.type == "single")
                response = Response(status=raw.status, headers=raw.headers, body=body, url=raw.url)
                following = paginator.next(request, response, records)
            yield Page(connector=self.connector.name, stream=stream.name,
                       partition=window["label"] if window else "", index=index,
                       method=request.method, url=redact_url(raw.url), status=raw.status,
                       byte_count=len(raw.body), sha256=hashlib.sha256(raw.body).hexdigest(), records=records,
                       fetched_at=utc_timestamp(), elapsed_ms=(time.perf_counter() - started) * 1000,
                       attempts=attempts, next_request=self._portable(following), offset=offset,
                       window=window["index"] if window else None, correlation_id=correlation,
                       body=raw.body if self.keep_bodies else None, holds_secret=REDACTOR.in_body(raw.body))
            request = following
            index += 1
            offset += len(records)

    def _portable(self, request: Request | None) -> Request | None:
        """The request as a checkpoint keeps it: a next link on the connector's base URL is kept
        relative to it, so a resumed run follows it to its own vendor (a ``sandbox://`` vendor, or
        a base_url from the environment, may be at another address in the next run)."""
        assert self.client is not None
        base = self.client.base_url
        if request is None or not request.url.startswith(base):
            return request
        portable = request.copy()
        portable.url = "/" + request.url[len(base):]
        return portable

    def _render(self, request: Request, context: dict[str, Any], stream: StreamPlan) -> Request:
        """The request with its request-time templates (page, cursor, offset) rendered: only the
        stream's own; a cursor or next link from the vendor is sent as the text it is."""
        rendered = request.copy()
        templates = self._templates
        only = self._own_templates.get(stream.name)
        if only is None:
            only = self._own_templates[stream.name] = template_texts(stream.path, stream.params, stream.headers,
                                                                     stream.body)
        try:
            rendered.url = str(render_tree(templates, request.url, context, only))
            rendered.params = render_tree(templates, request.params, context, only)
            rendered.headers = {k: str(v) for k, v in render_tree(templates, request.headers, context, only).items()}
            rendered.json = render_tree(templates, request.json, context, only)
        except (TemplateError, MissingValue) as exc:
            raise FatalFetchError(f"a request-time template of this stream failed: {exc}") from None
        return rendered

    async def fetch(self, request: Request, stream: StreamPlan,
                    correlation: str | None = None) -> tuple[RawResponse, Any, int]:
        """Send with auth, retries and one credential refresh after a 401. Every log line about
        the request, and the error it may end with, carry its correlation id."""
        correlation = correlation or new_correlation_id()
        with bound(CORRELATION_ID, correlation):
            try:
                return await self._fetch(request, stream, correlation)
            except FetchError as exc:
                exc.correlation_id = correlation  # type: ignore[attr-defined]
                raise

    async def _fetch(self, request: Request, stream: StreamPlan, correlation: str) -> tuple[RawResponse, Any, int]:
        assert self.client is not None
        client = self.client
        timeout = aiohttp.ClientTimeout(total=stream.timeout.total, sock_connect=stream.timeout.connect,
                                        sock_read=stream.timeout.read)
        attempts = 0
        key_header = stream.idempotency_key_header
        safe_to_resend = True if key_header and request.method.upper() not in IDEMPOTENT_METHODS else None
        unauthorized = False

        endpoint = f"{request.method} {redact_url(client.absolute(request.url)).split('?')[0]}"
        breaker = self.breakers.for_endpoint(endpoint, stream.breaker)
        self.endpoints.add(endpoint)

        async def attempt() -> tuple[RawResponse, Any]:
            nonlocal attempts, unauthorized
            probe = breaker.before_request()  # fails fast, without calling the vendor, while open
            attempts += 1
            unauthorized = False
            prepared = request.copy()
            prepared.headers.setdefault("X-Request-ID", correlation)
            if key_header:  # the same key on every attempt: the vendor applies the request once
                prepared.headers.setdefault(key_header, idempotency_key(request))
            try:
                async with self._stream_limit(stream), self._limit:
                    await self.quota.acquire()
                    prepared = await self.auth.apply(prepared, client)
                    try:
                        raw = await client.send_raw(prepared, timeout)
                    except RetriableFetchError as exc:
                        raise transport_error(exc, stream.retry) from None
                # Only the vendor's 401 to a data request earns a refresh: a token endpoint that
                # refused our credentials will refuse them again.
                unauthorized = raw.status == 401
                decoded = classify(raw, request.method, stream.retry, self.clock.now(), stream.response_rules,
                                   stream.json_answer)
            except FetchError as exc:
                if exc.status == THROTTLED:  # throttled, not unwell: Retry-After and the backoff deal with it
                    breaker.release(probe=probe)
                else:
                    breaker.record(not _endpoint_failure(exc), probe=probe)
                raise
            breaker.record(True, probe=probe)
            return raw, decoded

        retrier = Retrier(stream.retry, self.clock, on_retry=self._count_retry)
        label = f"{request.method} {redact_url(client.absolute(request.url))} [request {correlation}]"

        async def with_retries() -> tuple[RawResponse, Any]:
            try:
                return await retrier.run(attempt, method=request.method, label=label, idempotent=safe_to_resend)
            except FetchError as exc:
                if exc.status == THROTTLED:  # throttling that outlasted the retries does count
                    breaker.record(False, probe=False)
                raise

        try:
            raw, body = await with_retries()
        except AuthError:
            if not unauthorized or not await self._refresh(client):
                raise
            log.info("credentials refreshed after a 401; retrying %s once", label)
            raw, body = await with_retries()
        return raw, body, attempts

    def _stream_limit(self, stream: StreamPlan) -> asyncio.Semaphore:
        """A stream may allow fewer requests in flight than its connector."""
        limit = self._stream_limits.get(stream.name)
        if limit is None:
            limit = self._stream_limits[stream.name] = asyncio.Semaphore(stream.concurrency)
        return limit

    def _count_retry(self) -> None:
        self.counters.retries += 1

    async def _refresh(self, client: HttpSession) -> bool:
        self.counters.auth_refreshes += 1
        return await self.auth.refresh(client)


def idempotency_key(request: Request) -> str:
    """Derived from the request's content, so a rerun or a resumed run reuses it too."""
    identity = orjson.dumps({"method": request.method, "url": request.url, "params": request.params,
                             "json": request.json}, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(identity).hexdigest()[:32]


def stream_windows(stream: StreamPlan) -> list[dict[str, Any] | None]:
    """The stream's date windows as template values (``window.start``...), or one walk."""
    plan = stream.windows
    if plan is None:
        return [None]
    zone = ZoneInfo(plan.tz)
    windows = split(parse_bound(plan.start, zone), parse_bound(plan.end, zone), parse_step(plan.step))
    return [{"index": w.index, "label": w.label, "start": render_bound(w.start, plan.format),
             "end": render_bound(w.end, plan.format, inclusive_end=plan.end_inclusive)} for w in windows]


def _endpoint_failure(error: FetchError) -> bool:
    """Failures that say the endpoint is unwell (and count towards opening its breaker)."""
    return isinstance(error, (RetriableFetchError, TransportFailure)) or (error.status or 0) >= 500


def records_at(body: Any, path: tuple[str | int, ...], shown_path: str, raw: RawResponse,
               *, one_object: bool = True) -> list[Any]:
    """The records at the stream's path in a decoded body; FatalFetchError saying why not.

    An object counts as one record only where ``one_object`` allows it (a stream without
    pagination): on a paginated stream it is an answer of another shape, typically a 200 that
    carries an error, and taking it for a last page would end the walk early and quietly."""
    value = extract(body, path)
    if value is MISSING:
        keys = ", ".join(sorted(body)) if isinstance(body, dict) else type(body).__name__
        raise FatalFetchError(f"records path {shown_path} not found in the response from "
                              f"{redact_url(raw.url)} (top-level: {keys}); check the stream's records:",
                              url=redact_url(raw.url), status=raw.status)
    if value is None:
        return []
    if isinstance(value, dict) and one_object:
        return [value]
    if isinstance(value, dict):
        raise FatalFetchError(f"records path {shown_path} holds an object (keys: {', '.join(sorted(value)[:10])}), not "
                              f"the list of records a page of this paginated stream has, in the response from "
                              f"{redact_url(raw.url)}; if the vendor answers an error with status 200, declare "
                              f"it with a response rule", url=redact_url(raw.url), status=raw.status)
    if not isinstance(value, list):
        raise FatalFetchError(f"records path {shown_path} holds a {type(value).__name__}, not a list",
                              url=redact_url(raw.url), status=raw.status)
    return value
