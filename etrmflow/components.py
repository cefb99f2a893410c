"""What a component is, and the contracts each kind of component fulfils.

Every auth scheme, paginator, validator, transform step, sink, dead-letter sink and transport is a
class that owns its metadata (sqlfluff-rule style):

* ``type_name``: the value of ``type:`` in YAML that selects it;
* ``options_schema``: the JSON Schema of its YAML block (without ``type``), used by ``etrmflow
  validate`` to report problems at file:line:col;
* its docstring, with a YAML example, which feeds docs/reference.

The engine knows none of them by name: it asks the plugin manager (see ``hookspecs``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from etrmflow.clock import Clock

if TYPE_CHECKING:
    import pandas as pd


class Kind(str, enum.Enum):
    """The kinds of component, each registered through its own hook."""

    AUTH = "auth"
    PAGINATOR = "paginator"
    VALIDATOR = "validator"
    TRANSFORM = "transform"
    SINK = "sink"
    DEAD_LETTER = "dead_letter"
    TRANSPORT = "transport"

    def __str__(self) -> str:
        return self.value


class Component:
    """Base of every component class. Subclasses set the class attributes below."""

    kind: ClassVar[Kind]
    type_name: ClassVar[str]
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options: Mapping[str, Any] = options

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring: shown by ``etrmflow plugins``."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


# ---------------------------------------------------------------------------------------------
# Records and their verdicts
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One reason a record breaks its contract.

    ``pointer`` is a JSON pointer into the record (``/legs/0/volume_mwh``; ``""`` for the
    record itself); ``keyword`` is the JSON Schema keyword or ``rule:<name>``; ``validator``
    names the validator type that found it.
    """

    pointer: str
    keyword: str
    message: str
    validator: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "keyword": self.keyword, "message": self.message,
                "validator": self.validator}


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractInfo:
    """What components downstream of validation need to know about the contract."""

    name: str
    version: str
    primary_key: tuple[str, ...]
    schema: Mapping[str, Any]

    def column_types(self) -> dict[str, str]:
        """JSON types of the top-level properties, e.g. ``{"price": "number"}``."""
        types: dict[str, str] = {}
        for column, spec in (self.schema.get("properties") or {}).items():
            declared = spec.get("type") if isinstance(spec, Mapping) else None
            if isinstance(declared, list):
                declared = next((t for t in declared if t != "null"), "string")
            if declared is None and isinstance(spec, Mapping) and "enum" in spec:
                declared = "string"
            types[column] = declared or "object"
        return types


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationContext:
    """What a validator is built with: the contract, the project folder (for reference files)
    and every registered JSON Schema format checker (``{name: function(value) -> bool}``)."""

    contract: ContractInfo
    project_dir: str = "."
    format_checkers: Mapping[str, Any] = field(default_factory=dict)
    rules: tuple[Mapping[str, Any], ...] = ()


class Validator(Component):
    """Checks a batch of records; returns, for each record, its violations (empty = valid).

    Validators run off the event loop, in a worker thread, one batch at a time. Built once
    per run: compile schemas and expressions in ``__init__``, not per batch.
    """

    kind = Kind.VALIDATOR

    def __init__(self, options: Mapping[str, Any], *, context: ValidationContext) -> None:
        super().__init__(options)
        self.context = context

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        raise NotImplementedError


class Transform(Component):
    """One pandas step from a DataFrame to the next. Runs batch by batch as pages arrive."""

    kind = Kind.TRANSFORM
    whole_dataset: ClassVar[bool] = False
    """True for steps that must see every row at once (dedupe across pages, aggregation). Such a
    step subclasses ``etrmflow.steps.dataset.DatasetStep``, whose docstring says how the engine
    hands it the rows: staged on disk, then sorted by its group key, in chunks of whole groups."""

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options)
        self.project_dir = project_dir

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchInfo:
    """Where a batch of rows came from; sinks stamp it on rows for lineage."""

    run_id: str
    batch_id: str
    page_sha256: str
    pipeline: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkContext:
    """What a sink is told when it opens."""

    pipeline: str
    run_id: str
    contract: ContractInfo
    project_dir: str
    target_dir: str
    resume: bool = False
    """True when this run continues an earlier, failed run with the same ``run_id``: staged
    output of that run must be kept and completed, not discarded."""
    secrets: Any = None
    """The run's ``etrmflow.secrets.SecretStore``: how a sink resolves ``secret()`` and
    ``env_var()`` markers in its options (a database password, a vendor token) at open."""
    connectors: Mapping[str, Any] = field(default_factory=dict)
    """``{name: etrmflow.engine.connections.SinkConnector}``: see ``Sink.connector_option``."""


class Sink(Component):
    """Writes batches of valid, transformed rows. Called from one worker thread, in order.

    ``write`` must be atomic per batch (all rows or none) and idempotent: writing the same
    batch twice leaves the same data. ``close(ok=False)`` means the run failed: sinks that
    replace their output must keep the previous output.
    """

    kind = Kind.SINK
    audit_event: ClassVar[str] = "batch_written"
    """The audit event recording each batch this sink took: a sink that sends rows to a
    vendor says ``batch_posted``."""
    connector_option: ClassVar[str | None] = None
    """The option naming a connector the sink writes to: compiled like a source's connector
    (validate reports an unknown one at file:line), found in ``SinkContext.connectors``."""

    def open(self, context: SinkContext) -> None:
        self.context = context

    def write(self, frame: pd.DataFrame, batch: BatchInfo) -> int:
        """Write the rows; return how many rows were written."""
        raise NotImplementedError

    def close(self, ok: bool) -> None:
        pass

    def audit_fields(self, batch_id: str) -> dict[str, Any]:
        """Evidence of how the batch was written, added to its audit entry (e.g. the keys posted)."""
        return {}

    def describe(self) -> str:
        """One line for the compile summary, e.g. ``sqlite target/etrmflow.db#trades (upsert)``."""
        return self.type_name


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A quarantined record: the original record, unchanged, and every reason."""

    record: Any
    violations: tuple[Violation, ...]
    contract: str
    contract_version: str
    connector: str
    stream: str
    page: int
    request_url: str
    run_id: str
    batch_id: str
    page_sha256: str
    record_sha256: str
    quarantined_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "violations": [v.as_dict() for v in self.violations],
            "contract": {"name": self.contract, "version": self.contract_version},
            "source": {"connector": self.connector, "stream": self.stream, "page": self.page,
                       "request_url": self.request_url},
            "run_id": self.run_id,
            "batch_id": self.batch_id,
            "page_sha256": self.page_sha256,
            "record_sha256": self.record_sha256,
            "quarantined_at": self.quarantined_at,
        }


class DeadLetterSink(Component):
    """Keeps quarantined records. Must never lose one, and must not store one twice."""

    kind = Kind.DEAD_LETTER

    def open(self, context: SinkContext) -> None:
        self.context = context

    def write(self, letters: list[DeadLetter]) -> int:
        """Store the letters; return how many were new."""
        raise NotImplementedError

    def close(self, ok: bool) -> None:
        pass

    def describe(self) -> str:
        return self.type_name


# ---------------------------------------------------------------------------------------------
# Fetching: requests, responses, auth and paginators are pure state machines
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Request:
    """One HTTP request about to be sent. Values may still hold ``${secret:NAME}`` markers."""

    method: str
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    data: dict[str, Any] | None = None
    """Form fields (``application/x-www-form-urlencoded``), e.g. for token endpoints."""
    basic_auth: tuple[str, str] | None = None
    """HTTP Basic user and password (markers allowed); the client encodes them after resolving."""

    def copy(self) -> Request:
        return Request(method=self.method, url=self.url, params=dict(self.params),
                       headers=dict(self.headers), json=self.json,
                       data=dict(self.data) if self.data is not None else None,
                       basic_auth=self.basic_auth)


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """A decoded vendor response, as paginators see it."""

    status: int
    headers: Mapping[str, str]
    body: Any
    url: str


class Paginator(Component):
    """Decides the next request from the last request and response, or says the walk is over.

    Pure: no I/O. ``first`` may set initial params (``page=1``); ``next`` returns the next
    request, or ``None`` at the end. Raise ``PaginationError`` rather than stop silently when
    the response contradicts itself (a repeated cursor, a short page before the known total).
    """

    kind = Kind.PAGINATOR

    def first(self, request: Request) -> Request:
        return request

    def next(self, request: Request, response: Response, records: list[Any]) -> Request | None:
        raise NotImplementedError

    def template_context(self, request: Request) -> dict[str, Any]:
        """Names this paginator offers to request-time templates (e.g. ``cursor``)."""
        return {}

    def no_data(self, request: Request) -> None:
        """A ``no_data`` rule answered ``request``: the walk ends, as at an empty last page.
        Raise ``PaginationError`` if the vendor announced more pages (a total not reached)."""


class HttpClient:
    """What auth components may call: send a request (secrets resolved at the last moment)."""

    async def send(self, request: Request) -> Response:  # pragma: no cover - interface
        raise NotImplementedError


class Auth(Component):
    """Adds credentials to a request. May call the vendor (e.g. a token endpoint) through
    the client it is given; must never put a secret anywhere but the outgoing request."""

    kind = Kind.AUTH

    def __init__(self, options: Mapping[str, Any], *, clock: Clock | None = None) -> None:
        super().__init__(options)
        self.clock = clock or Clock()

    async def apply(self, request: Request, client: HttpClient) -> Request:
        return request

    async def refresh(self, client: HttpClient) -> bool:
        """Called once after a 401. Return True if a retry with new credentials makes sense."""
        return False

    def describe(self) -> str:
        return self.type_name


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """One page of records as fetched, with the evidence of what the vendor sent."""

    connector: str
    stream: str
    partition: str
    index: int
    method: str
    url: str
    """The request URL with secrets redacted."""
    status: int
    byte_count: int
    sha256: str
    """SHA-256 of the raw response body."""
    records: list[Any]
    fetched_at: str
    elapsed_ms: float
    attempts: int = 1
    next_request: Request | None = None
    """The request that follows this page (None at the end): where a resumed run starts."""
    offset: int = 0
    """Records of the walk before this page."""
    window: int | None = None
    """Index of the date window this page belongs to, for streams with windows."""
    correlation_id: str = ""
    """The id of the request that fetched the page (its retries share it): in the log lines
    about the request, its ``X-Request-ID`` header and the page's audit entry."""
    body: bytes | None = field(default=None, repr=False, compare=False)
    """The raw body when the run keeps bodies (``Transport.keep_bodies``), else None (pages in flight hold records)."""
    holds_secret: bool | None = None
    """Whether the raw body holds a resolved secret (``secrets.REDACTOR.in_body``); None, when
    the transport did not look, makes the engine look in the records."""


class Transport(Component):
    """Fetches the pages of a stream (REST over aiohttp built in; SFTP, files, WebSocket plug in).

    An async context manager built with the connector plan, auth, secrets, clock, vars and a
    paginator factory (see ``etrmflow.engine.runner.build_transport``). ``pages(stream, start)``
    yields ``Page`` objects in order, each with the ``next_request`` that follows it; ``start``
    (from a checkpoint: ``{"request", "index", "offset"}``) resumes a walk. ``counters`` holds
    ``requests``, ``retries`` and ``bytes``.
    """

    kind = Kind.TRANSPORT
    keep_bodies: bool = False
    """Set by the runner under ``etrmflow run --keep-bodies``: pages then carry their raw body in ``Page.body``."""
