"""HTTP requests for one connector: secrets resolved at the last moment, responses classified.

Error classification happens here and only here: a status or exception becomes a
RetriableFetchError, FatalFetchError or AuthError, and the class decides what happens next.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus, urlencode, urljoin

import aiohttp
from yarl import URL

from etrmflow import jsontext
from etrmflow.clock import Clock
from etrmflow.components import HttpClient, Request, Response
from etrmflow.engine.retry import parse_retry_after
from etrmflow.errors import AuthError, FatalFetchError, FetchError, RetriableFetchError
from etrmflow.jsonpath import MISSING, compile_path, extract
from etrmflow.jsontext import escape_lone_surrogates
from etrmflow.plan import ResponseRule, RetryPolicy
from etrmflow.secrets import REDACTOR, SecretStore, redact, redact_url

log = logging.getLogger("etrmflow.http")
_BODY_EXCERPT = 200
DEFAULT_MAX_BODY = 256 * 1024 * 1024
"""Default of a connector's ``defaults.max_response_size``: generous for a vendor's pages, yet a
gzip bomb (kilobytes on the wire, gigabytes once inflated) stops long before memory runs out."""
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 64 * 1024


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
                 clock: Clock, counters: FetchCounters, ssl_context: ssl.SSLContext | bool,
                 max_body: int = DEFAULT_MAX_BODY, owner: str = "the connector") -> None:
        self.session = session
        self.base_url = base_url.rstrip("/") + "/"
        self.secrets = secrets
        self.clock = clock
        self.counters = counters
        self.ssl = ssl_context
        self.max_body = max_body
        self.owner = owner
        """Which connector (and file) this is, for the message that says how to raise the limit."""

    def absolute(self, url: str) -> str:
        return url if "://" in url else urljoin(self.base_url, url.lstrip("/"))

    async def send_raw(self, request: Request, timeout: aiohttp.ClientTimeout | None = None) -> RawResponse:
        try:
            return await self._send_raw(request, timeout)
        except UnicodeEncodeError as exc:
            if "surrogates not allowed" not in str(exc):
                raise
            raise _unsendable(request, self.absolute(request.url)) from None

    async def _send_raw(self, request: Request, timeout: aiohttp.ClientTimeout | None) -> RawResponse:
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
            # jsontext: a vendor's cursor echoed in the body keeps its digits, or its \\u escape
            kwargs["data"] = jsontext.dumps(_resolve_tree(request.json, resolve))
            kwargs["headers"].setdefault("Content-Type", "application/json")
        if request.data is not None:
            kwargs["data"] = {k: resolve(str(v)) for k, v in request.data.items()}
        if request.basic_auth is not None:
            kwargs["headers"]["Authorization"] = _basic(*(resolve(part) for part in request.basic_auth))
        self.counters.requests += 1
        total = (timeout or self.session.timeout).total
        try:
            # One deadline for the request and every redirect hop: each hop's own ``total`` would
            # let a vendor stretch a request to ten times its timeout.
            async with asyncio.timeout(total):
                return await self._follow(request.method, _parsed(resolve(url), request.method, shown), kwargs,
                                          shown)
        except asyncio.TimeoutError:
            raise FetchTimeout(f"{request.method} {shown} timed out", url=shown) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            # A payload error is a body cut short in transit: the same as a dropped connection.
            raise ConnectionFailed(f"{request.method} {shown} failed: connection error: "
                                   f"{redact(str(exc)) or type(exc).__name__}", url=shown) from None
        except aiohttp.ClientError as exc:
            raise FatalFetchError(f"{request.method} {shown} failed: {redact(str(exc))}", url=shown) from None

    async def _follow(self, method: str, url: URL, kwargs: dict[str, Any], shown: str) -> RawResponse:
        """Send, following redirects here rather than in aiohttp, which keeps every header but
        ``Authorization`` when a redirect leaves for another host: an API key in ``X-Api-Key``
        went along. A hop to another origin (scheme, host, port) goes as a stranger's request,
        and so does every hop after it: none of the request's headers, query parameters, body
        or cookies (see ``_hop``)."""
        origin, session = _origin(url), self.session
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with session.request(method, url, allow_redirects=False, **kwargs) as response:
                    location = response.headers.get("Location") if response.status in _REDIRECTS else None
                    if location is None:
                        body = await self._read_body(response, method, shown)
                        return RawResponse(status=response.status, headers=dict(response.headers), body=body,
                                           url=str(response.url))
                    status, here = response.status, response.url
                target = here.join(_parsed(location, method, shown, status))
                url, method, kwargs = _hop(status, method, target, kwargs, origin, shown)
                if session is self.session and _origin(url) != origin:
                    session = self._stranger()
                shown = redact_url(str(url))
        finally:
            if session is not self.session:
                await session.close()
        raise FatalFetchError(f"{method} {shown} redirected more than {MAX_REDIRECTS} times; check the URL "
                              f"with the vendor", url=shown)

    def _stranger(self) -> aiohttp.ClientSession:
        """A session for hops to another origin: the same connection pool, no cookie jar."""
        return aiohttp.ClientSession(connector=self.session.connector, connector_owner=False,
                                     cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": "etrmflow"})

    async def _read_body(self, response: aiohttp.ClientResponse, method: str, shown: str) -> bytes:
        """The body, decompressed as it streams in, up to ``max_body`` bytes: past it the
        request fails before it holds more (a gzip bomb is kilobytes on the wire)."""
        body = bytearray()
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            body += chunk
            self.counters.bytes += len(chunk)
            if len(body) > self.max_body:
                raise FatalFetchError(
                    f"{method} {shown} answered a body larger than {_size(self.max_body)} (counted once "
                    f"decompressed), the most {self.owner} accepts; if the vendor's pages really are that "
                    f"large, raise defaults.max_response_size (e.g. max_response_size: "
                    f"{_size(self.max_body * 4)}), or ask for smaller pages", url=shown, status=response.status)
        return bytes(body)

    async def send(self, request: Request) -> Response:
        """One attempt, JSON decoded; used by auth for token requests."""
        raw = await self.send_raw(request)
        return Response(status=raw.status, headers=raw.headers, body=_decode_lenient(raw.body), url=raw.url)


def _parsed(url: str, method: str, shown: str, status: int | None = None) -> URL:
    try:
        return URL(url)
    except ValueError as exc:
        what = f"redirected (status {status}) to an invalid URL" if status else "is not a valid URL"
        raise FatalFetchError(f"{method} {shown} {what}: {redact(str(exc))}", url=shown, status=status) from None


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return url.scheme.lower(), (url.host or "").lower(), url.port  # yarl fills in the default port


def _hop(status: int, method: str, target: URL, kwargs: dict[str, Any], origin: tuple[str, str | None, int | None],
         shown: str) -> tuple[URL, str, dict[str, Any]]:
    """The next request of a redirect: aiohttp's rules for the method and body, the query as the
    Location gives it (params are not added again); to another origin, nothing of ours."""
    if target.scheme not in ("http", "https"):
        raise FatalFetchError(f"{method} {shown} redirected to a {target.scheme or 'relative'} URL, which "
                              f"etrmflow does not follow", url=shown, status=status)
    kwargs = {**kwargs, "params": None}
    if status in (301, 302) and method == "POST":
        # Clients turn it into a GET without the body, and that GET's 200 would pass for the
        # POST's answer: settlement instructions counted as booked that never were.
        raise FatalFetchError(f"{method} {shown} was redirected (status {status}) to "
                              f"{redact_url(str(target.with_query(None)))}: a {status} turns a POST into a GET "
                              f"without its body, so etrmflow does not follow it; point the URL at the new "
                              f"location (base_url or path)", url=shown, status=status)
    if status == 303 and method != "HEAD":
        method = "GET"
        kwargs.pop("data", None)
        kwargs["headers"] = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "content-type"}
    if _origin(target) == origin:
        return target, method, kwargs
    where = redact_url(str(target.with_query(None)))
    if "data" in kwargs:
        raise FatalFetchError(f"{method} {shown} redirected (status {status}) to another origin, {where}, and "
                              f"asks for the request body to be sent there: etrmflow does not send a request's "
                              f"body (it may hold credentials) to another host", url=shown, status=status)
    spelled = unquote(str(target))
    if REDACTOR.redact(spelled) != spelled:
        raise FatalFetchError(f"{method} {shown} redirected (status {status}) to another origin, {where}, with a "
                              f"credential in its URL: etrmflow does not send it there", url=shown, status=status)
    return target, method, {key: value for key, value in kwargs.items() if key in ("ssl", "timeout")}


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= factor and count % factor == 0:
            return f"{count // factor}{unit}"
    return f"{count}B"


def _unsendable(request: Request, url: str) -> FatalFetchError:
    """A URL, query or header cannot carry a lone surrogate (it has no UTF-8 bytes): one that
    holds one (a cursor or next link from the vendor's last page, usually) is not sent."""
    params = {key: escape_lone_surrogates(str(value)) for key, value in request.params.items()}
    shown = _shown(escape_lone_surrogates(_without_keys(url, request.params)), params)
    return FatalFetchError(f"{request.method} {shown} cannot be sent: it holds a lone UTF-16 surrogate (shown "
                           f"as its \\u escape), which no URL, query or header can carry; it usually comes "
                           f"from a cursor or next link the vendor sent: ask the vendor to send whole "
                           f"characters", url=shown)


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
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _decode_lenient(body: bytes) -> Any:
    # No lone surrogates: a token that holds one could not be sent in a header anyway.
    try:
        return jsontext.loads(body) if body else None
    except ValueError:  # orjson's JSONDecodeError is one
        return None


class TransportFailure(FatalFetchError):
    """A timeout or connection failure that the retry policy says not to retry."""


def transport_error(error: RetriableFetchError, retry: RetryPolicy) -> FetchError:
    """The error to raise for a timeout or connection failure: fatal if the policy says no retry."""
    if (isinstance(error, FetchTimeout) and not retry.on_timeout) or (
            isinstance(error, ConnectionFailed) and not retry.on_connection_error):
        return TransportFailure(f"{error} (not retried: retry.on_"
                               f"{'timeout' if isinstance(error, FetchTimeout) else 'connection_error'} is false)",
                               url=error.url, status=error.status)
    return error


NO_DATA: Any = object()
"""What ``classify`` returns when a response rule says the vendor has no data: an empty page."""


def classify(raw: RawResponse, method: str, retry: RetryPolicy, now: Any,
             rules: tuple[ResponseRule, ...] = (), json_answer: bool = True) -> Any:
    """Decode a response or raise the exception class that decides its fate.

    Response rules come first, in the order written: a connector may declare that a status
    means "no data", that a 200 carrying an error body is retriable or fatal, or what an error
    status with a given body means, before the retry policy looks at the status.
    """
    shown = redact_url(raw.url)
    body, malformed = _decode(raw.body)
    rule = _matching_rule(rules, raw.status, body)
    if rule is not None:
        return _apply(rule, raw, method, shown)
    if raw.status == 401:
        raise AuthError(f"{method} {shown} answered 401 Unauthorized: {_excerpt(raw.body)}", url=shown, status=401)
    if raw.status in retry.on_status:
        wait = parse_retry_after(raw.headers.get("Retry-After"), now)
        raise RetriableFetchError(f"{method} {shown} answered {raw.status}", url=shown, status=raw.status,
                                  retry_after=wait)
    if raw.status >= 400:
        raise FatalFetchError(f"{method} {shown} answered {raw.status}: {_excerpt(raw.body)}", url=shown,
                              status=raw.status)
    if malformed is not None and json_answer:
        # A truncated body is usually a broken transfer: worth another attempt.
        raise RetriableFetchError(f"{method} {shown} returned malformed JSON ({malformed})", url=shown,
                                  status=raw.status)
    return body


def _decode(raw: bytes) -> tuple[Any, ValueError | None]:
    """The body once decoded (rules and the caller share it), or the reason it is not JSON.

    Numbers exactly as sent: a price with more digits than a double holds must reach the
    exact-decimal check as written, not rounded to one that passes (see ``etrmflow.jsontext``).
    A lone surrogate escape (``"Ac\\ud800me"``) is read too, marked: the page processor
    quarantines the records that hold one, and the rest of the page loads.
    """
    try:
        return (jsontext.loads(raw, lone_surrogates=True) if raw else None), None
    except ValueError as exc:  # orjson's JSONDecodeError is one
        return None, exc


_SUCCESS = range(200, 300)


def _matching_rule(rules: tuple[ResponseRule, ...], status: int, body: Any) -> ResponseRule | None:
    """The first rule, in the order written, whose status and body field both match."""
    for rule in rules:
        if status not in (rule.status or _SUCCESS):
            continue
        if rule.path is None:
            if rule.status:  # a rule with neither a status nor a path matches nothing
                return rule
        elif _matches(rule, body):
            return rule
    return None


def _matches(rule: ResponseRule, body: Any) -> bool:
    value = extract(body, compile_path(rule.path or "$"))
    if value is MISSING or value is None:
        return False
    return value == rule.equals if rule.has_equals else True


def _apply(rule: ResponseRule, raw: RawResponse, method: str, shown: str) -> Any:
    if rule.action == "no_data":
        return NO_DATA
    what = f"{method} {shown} answered {raw.status} matching a response rule"
    detail = f" ({rule.message})" if rule.message else ""
    if rule.action == "retry":
        raise RetriableFetchError(f"{what}{detail}: {_excerpt(raw.body)}", url=shown, status=raw.status)
    raise FatalFetchError(f"{what}{detail}: {_excerpt(raw.body)}", url=shown, status=raw.status)


def _excerpt(body: bytes) -> str:
    text = body[:_BODY_EXCERPT].decode("utf-8", "replace").strip()
    return redact(text + ("..." if len(body) > _BODY_EXCERPT else "")) or "(empty body)"


def _resolve_tree(value: Any, resolve: Callable[[str], str]) -> Any:
    """Secret markers resolved inside every string of a JSON body."""
    if isinstance(value, str):
        return resolve(value)
    if isinstance(value, Mapping):
        return {key: _resolve_tree(item, resolve) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_tree(item, resolve) for item in value]
    return value
