"""Logging for the command line: readable by default, JSON for machines, secrets always masked.

A JSON line has ``ts`` (UTC, ending in ``Z``), ``level``, ``logger``, ``run_id``, ``event`` (the
message) and the record's extra fields; a line logged while a vendor request is in flight also has
its ``correlation_id`` (the ``X-Request-ID`` it was sent with) and the ``pipeline``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from etrmflow.engine.context import ContextFilter
from etrmflow.secrets import RedactingFilter

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
        entry = {"ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": record.levelname.lower(),
                 "logger": record.name, "run_id": self.run_id, "event": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        return json.dumps(entry, default=str)


def configure_logging(*, level: str, fmt: str, run_id: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(run_id))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("etrmflow")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiohttp logs unclosed-connection noise and request lines we already cover.
    logging.getLogger("aiohttp").setLevel(logging.ERROR)
