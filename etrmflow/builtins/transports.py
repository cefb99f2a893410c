"""Built-in transports."""

from __future__ import annotations

from etrmflow import hookimpl
from etrmflow.components import Transport
from etrmflow.engine.http import HttpTransport


@hookimpl
def etrmflow_transport_types() -> list[type[Transport]]:
    return [HttpTransport]
