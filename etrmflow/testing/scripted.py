"""A vendor that answers what a test scripts: real HTTP on 127.0.0.1 for the cases the sandbox
vendor does not serve (a malformed record, a number longer than a double, a page sent twice, a
cursor that loops, a slow answer).

    def test_a_repeated_page_fails(etrmflow_project, scripted_vendor):
        vendor = scripted_vendor(lambda request: {"trades": [TRADE], "next": 2})
        etrmflow_project.env["VENDOR_URL"] = vendor.url
        ...
        assert vendor.requests[-1].query == {"page": "2"}

``answer(request)`` returns the body (``bytes`` sent as they are, anything else as JSON) or a
:class:`Answer` with a status and headers. It runs in the server's threads; a test that changes
what it answers from the test's thread should swap whole values, not mutate them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Answer", "ScriptedRequest", "ScriptedVendor"]


@dataclass(frozen=True, slots=True)
class ScriptedRequest:
    """One request as the vendor received it (a query parameter given twice keeps the last)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    body: Any = b""
    """``bytes`` as they are; anything else written as JSON."""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


class ScriptedVendor:
    """A threaded HTTP server on 127.0.0.1 that answers every request with ``answer(request)``."""

    def __init__(self, answer: Callable[[ScriptedRequest], Any]) -> None:
        self.answer = answer
        self.requests: list[ScriptedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(vendor: ScriptedVendor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = ScriptedRequest(method=self.command, path=parts.path, query=dict(parse_qsl(parts.query)),
                                      headers=dict(self.headers.items()), body=self.rfile.read(length))
            vendor.requests.append(request)
            answer = vendor.answer(request)
            if not isinstance(answer, Answer):
                answer = Answer(body=answer)
            body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            headers = {"Content-Type": "application/json", **answer.headers, "Content-Length": str(len(body))}
            try:
                self.send_response(answer.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client went away (a run killed on purpose), maybe before the headers
                pass

        do_GET = do_POST = do_PUT = do_DELETE = _serve  # the http.server API names them

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
