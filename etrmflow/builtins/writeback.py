"""Built-in plugin: the ``http`` sink, which posts rows back to a vendor."""

from __future__ import annotations

from etrmflow import hookimpl
from etrmflow.sinks.http_post import HttpPostSink


@hookimpl
def etrmflow_sink_types() -> list[type]:
    return [HttpPostSink]
