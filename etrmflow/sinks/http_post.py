"""The ``http`` sink: valid rows POSTed to a vendor endpoint, each batch booked once.

The sink runs in the pipeline's worker thread (``write`` is synchronous) and the HTTP stack is
async, so the sink keeps an event loop of its own in that thread, with one transport (one
aiohttp session) for its whole life: opened in ``open``, closed in ``close``. The run's main
loop, which keeps fetching pages meanwhile, is never blocked or shared.

Requests go through the connector's transport exactly as a source's do: base_url, auth (with
one refresh after a 401), headers, TLS settings, rate limit, timeouts, retry policy, circuit
breaker and response rules. A POST is retried only because it carries an idempotency key
derived from its content (see ``etrmflow.sinks.json_body``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from etrmflow.components import BatchInfo, Request, Sink, SinkContext
from etrmflow.errors import CredentialsRejected, EtrmflowError, FetchError, SinkError
from etrmflow.plan import ComponentPlan, SinkConnectorPlan, StreamPlan
from etrmflow.secrets import redact
from etrmflow.sinks.common import decimal_specs
from etrmflow.sinks.json_body import chunks, encode, idempotency_key, row_objects
from etrmflow.templating import is_template

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("etrmflow.sink")
DEFAULT_BATCH_SIZE = 100
DEFAULT_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
"""How a vendor says it answered from its idempotency store: the batch was booked before."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Posted:
    """One request the vendor acknowledged."""

    key: str
    rows: int
    status: int
    replayed: bool
    attempts: int


@dataclass(slots=True)
class PostedCounts:
    requests: int = 0
    rows: int = 0
    replayed_requests: int = 0
    replayed_rows: int = 0

    def add(self, posted: Posted) -> None:
        self.requests += 1
        self.rows += posted.rows
        if posted.replayed:
            self.replayed_requests += 1
            self.replayed_rows += posted.rows


class HttpPostSink(Sink):
    """POST rows as JSON to an endpoint of a project connector, each batch booked once.

    Rows go in requests of ``batch_size`` (a page's rows split in order, so the same rows always
    make the same requests), as a JSON list of row objects, or ``{wrap: [...]}``. Each request
    carries ``Idempotency-Key: SHA-256(scheme, connector, path, exact body bytes)``: a retry, a
    rerun or a resumed run sends the same key for a request of the same rows, and the vendor
    answers from its idempotency store instead of booking them again (a page that changed between
    runs makes other requests: ``batch_size: 1`` gives each row its own key). Decimals are sent
    with every digit (40.50 stays 40.50, never a float); timestamps as ISO 8601 with their UTC
    offset. A refusal the retry policy does not retry (a 4xx) fails the run with the vendor's
    message. A page split over several requests is not booked atomically: if one fails, the
    earlier ones stay booked, and the rerun or resume that completes the page sends them again
    with the same keys, so the vendor answers them from its store and books only the rest.

    Example::

        sinks:
          - type: http
            connector: acme_etrm
            path: /api/v2/settlement-instructions
            batch_size: 50
            wrap: instructions
            columns: [settlement_id, amount, currency, settlement_date]
    """

    type_name = "http"
    audit_event = "batch_posted"
    connector_option = "connector"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["connector", "path"],
        "properties": {
            "connector": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                          "description": "A connector of the project: its base_url, auth, headers, TLS, rate "
                                         "limit and defaults (timeouts, retry, breaker, response rules) apply."},
            "path": {"type": "string", "pattern": "^/",
                     "description": "The endpoint, starting with /, appended to the connector's base_url."},
            "batch_size": {"type": "integer", "minimum": 1, "maximum": 10000, "default": DEFAULT_BATCH_SIZE,
                           "description": "Rows per request (default 100)."},
            "wrap": {"type": "string", "minLength": 1,
                     "description": "Send {WRAP: [rows]} instead of a bare JSON list of rows."},
            "columns": {"type": "array", "minItems": 1, "uniqueItems": True,
                        "items": {"type": "string", "minLength": 1},
                        "description": "The columns to send (default: every column of the rows)."},
            "idempotency_header": {"type": "string", "pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
                                   "default": DEFAULT_KEY_HEADER,
                                   "description": "The header carrying each request's idempotency key "
                                                  "(default Idempotency-Key)."},
        },
    }

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.connector: str = options["connector"]
        self.path: str = options["path"]
        self.batch_size: int = options.get("batch_size", DEFAULT_BATCH_SIZE)
        self.wrap: str | None = options.get("wrap")
        self.columns: list[str] | None = options.get("columns")
        self.key_header: str = options.get("idempotency_header", DEFAULT_KEY_HEADER)
        self.counts = PostedCounts()
        self.last_write: list[Posted] = []
        self._last_batch: str | None = None
        """The requests of the latest ``write``, each with its key (for an audit trail)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: Any = None
        self._stream: StreamPlan | None = None

    def describe(self) -> str:
        return f"http {self.connector} POST {self.path}"

    @property
    def request_retries(self) -> int:
        """POSTs this sink sent again after a failed attempt (the run's ``counts.sink_retries``)."""
        counters = getattr(self._transport, "counters", None)
        return int(getattr(counters, "retries", 0))

    def open(self, context: SinkContext) -> None:
        super().open(context)
        found = context.connectors.get(self.connector)
        if found is None:  # compile resolves every sink connector; this guards plans built by hand
            raise SinkError(f"{self.describe()}: connector '{self.connector}' was not compiled for this "
                            f"pipeline; compile it again (etrmflow compile)")
        self._stream = request_policy(found.plan, self.path, self.key_header)
        self._decimals = decimal_specs(context.contract)
        self._numbers = frozenset(name for name, kind in context.contract.column_types().items()
                                  if kind in ("integer", "number"))
        loop = asyncio.new_event_loop()
        try:
            transport = found.new_transport()
            loop.run_until_complete(transport.__aenter__())
        except BaseException as exc:
            _close_loop(loop)
            if isinstance(exc, FetchError) and not isinstance(exc, CredentialsRejected):
                # The transport's own words (an unreadable tls.ca_bundle), said of this sink.
                raise SinkError(f"{self.describe()}: cannot open connector '{self.connector}': {exc}") from None
            if isinstance(exc, EtrmflowError) or not isinstance(exc, Exception):
                raise
            # A CA bundle that is not there, a base_url aiohttp cannot use: say which connector.
            raise SinkError(f"{self.describe()}: cannot open connector '{self.connector}': {type(exc).__name__}: "
                            f"{redact(str(exc))}; check its base_url and tls settings") from None
        self._loop, self._transport = loop, transport

    def write(self, frame: pd.DataFrame, batch: BatchInfo) -> int:
        rows = row_objects(frame, self.columns, self._decimals, numbers=self._numbers)
        self.last_write = []
        self._last_batch = batch.batch_id
        for offset, piece in chunks(rows, self.batch_size):
            body = encode(piece, self.wrap)
            key = idempotency_key(self.connector, self.path, body)
            where = (f"{self.describe()}: rows {offset + 1}-{offset + len(piece)} of batch {batch.batch_id} "
                     f"({self.key_header} {key})")
            posted = self._post(body, key, len(piece), where)
            self.last_write.append(posted)
            self.counts.add(posted)
        return len(rows)

    def audit_fields(self, batch_id: str) -> dict[str, Any]:
        """The batch's requests with their idempotency keys: proof of what was booked, and how."""
        if batch_id != self._last_batch:
            return {}
        return {"requests": [{"idempotency_key": p.key, "rows": p.rows, "status": p.status,
                              "replayed": p.replayed, "attempts": p.attempts} for p in self.last_write]}

    def _post(self, body: bytes, key: str, rows: int, where: str) -> Posted:
        stream, loop = self._stream, self._loop
        assert stream is not None and loop is not None, "open the sink first"
        request = Request(method="POST", url=self.path, params=dict(stream.params),
                          headers={**stream.headers, self.key_header: key}, json=orjson.Fragment(body))
        try:
            raw, _, attempts = loop.run_until_complete(self._transport.fetch(request, stream))
        except CredentialsRejected as exc:  # a configuration problem: keeps its own exit code
            raise CredentialsRejected(f"{where}: {exc}", url=exc.url, status=exc.status) from None
        except FetchError as exc:
            raise SinkError(f"{where}: {exc}") from None
        replayed = raw.headers.get(REPLAYED_HEADER, "").lower() == "true"
        log.debug("%s: answered %d after %d attempt(s)%s", where, raw.status, attempts,
                  " (replayed: booked before)" if replayed else "")
        return Posted(key=key, rows=rows, status=raw.status, replayed=replayed, attempts=attempts)

    def close(self, ok: bool) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run_until_complete(self._transport.__aexit__(None, None, None))
        finally:
            _close_loop(loop)
        counts = self.counts
        log.info("%s: %d rows in %d requests; %d of those requests replayed by the vendor (booked before)",
                 self.describe(), counts.rows, counts.requests, counts.replayed_requests)


def request_policy(target: SinkConnectorPlan, path: str, key_header: str) -> StreamPlan:
    """The POST the sink sends, as the transport takes it: the connector's headers and params,
    and the request policy of its defaults, with the idempotency key header declared."""
    connector = target.connector
    for name, value in {**connector.headers, **connector.params}.items():
        if is_template(value):
            raise SinkError(f"connector '{connector.name}': {name} is a request-time template "
                            f"({value!r}), which means nothing for a sink's requests")
    return StreamPlan(name=f"sink {path}", method="POST", path=path, params=dict(connector.params),
                      headers={k: str(v) for k, v in connector.headers.items()}, body=None, records="$",
                      paginator=ComponentPlan(type="single", options={}), concurrency=1,
                      timeout=target.timeout, retry=target.retry, breaker=target.breaker,
                      idempotency_key_header=key_header, response_rules=target.response_rules,
                      json_answer=False)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left (a keep-alive handler, say) so that closing warns about nothing."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:  # gather() of nothing would look for a loop this thread has not got
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
