"""What a log line is about: the pipeline running and the vendor request in flight.

Context variables, set by the engine on the event loop (each pipeline's task has its own copy),
read by ``ContextFilter`` on the log handler. So every line logged while a request is in flight
(its retries, a circuit-breaker change, a token refresh) carries the request's correlation id
and the pipeline, without each call site passing them along.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

PIPELINE: ContextVar[str | None] = ContextVar("etrmflow_pipeline", default=None)
CORRELATION_ID: ContextVar[str | None] = ContextVar("etrmflow_correlation_id", default=None)
_FIELDS = (("pipeline", PIPELINE), ("correlation_id", CORRELATION_ID))


def new_correlation_id() -> str:
    """A fresh id for one request and its retries (sent as ``X-Request-ID``)."""
    return uuid.uuid4().hex[:12]


@contextlib.contextmanager
def bound(variable: ContextVar[str | None], value: str | None) -> Iterator[None]:
    """``variable`` is ``value`` inside the block, and what it was before after it."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


class ContextFilter(logging.Filter):
    """Adds ``pipeline`` and ``correlation_id`` to a record, unless the call site set them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in _FIELDS:
            value = variable.get()
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        return True
