"""Running the sandbox vendor over real HTTP on loopback.

* ``SandboxServer``: in the caller's event loop (async tests, the in-process example run).
* ``ThreadedSandbox``: in its own event loop on a background thread (sync tests, benchmarks).
* ``serve``: blocking, for ``etrmflow sandbox``; Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
import urllib.request
from typing import Any, TextIO

from aiohttp import web

from etrmflow.sandbox.app import build_app
from etrmflow.sandbox.config import SandboxConfig
from etrmflow.sandbox.faults import FaultRule


class SandboxServer:
    """The sandbox app on ``host:port`` (port 0 picks a free one) in the running event loop.

    ::

        async with SandboxServer(SandboxConfig(trades=1000)) as server:
            url = server.base_url          # http://127.0.0.1:54321
    """

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SandboxConfig()
        self.host = host
        self.port = port
        self.app = build_app(self.config)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        """Listen and return the base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._runner is not None:
            return self.base_url
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.port = port
        self.base_url = f"http://{_url_host(host)}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# Loopback never goes through the HTTP(S)_PROXY a CI machine may set.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _wait_until_accepting(host: str, port: int, timeout: float = 5.0) -> None:
    with socket.create_connection((host, port), timeout=timeout):
        pass


class ThreadedSandbox:
    """The sandbox in a background thread with its own event loop, for synchronous code.

    ::

        with ThreadedSandbox(SandboxConfig(trades=100)) as sandbox:
            requests_to(sandbox.base_url)
            assert sandbox.stats()["data_requests"] == 3
    """

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SandboxConfig()
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.server: SandboxServer | None = None
        self.base_url = ""

    def start(self) -> str:
        if self._thread is not None:
            return self.base_url
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="etrmflow-sandbox", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self.server = self._call(self._make_server())
            self.base_url = self._call(self.server.start())
            _wait_until_accepting(self.server.host, self.server.port)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    async def _make_server(self) -> SandboxServer:
        # Built inside the loop thread, so the app belongs to that loop.
        return SandboxServer(self.config, self._host, self._port)

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None, "the sandbox is not running"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self.server is not None:
                self._call(self.server.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            _close_loop(loop)
            self._loop = self._thread = None

    def __enter__(self) -> ThreadedSandbox:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- admin helpers, over HTTP like any client ------------------------------------------

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with _NO_PROXY.open(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "/_sandbox/stats")

    def set_faults(self, faults: list[str | dict[str, Any] | FaultRule]) -> list[str]:
        specs = [rule.to_dict() if isinstance(rule, FaultRule) else rule for rule in faults]
        return self._admin("POST", "/_sandbox/faults", specs)["faults"]

    def reset(self) -> None:
        self._admin("POST", "/_sandbox/reset", {})


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left (e.g. a keep-alive handler) so closing warns about nothing."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def banner(config: SandboxConfig, base_url: str) -> str:
    """What ``etrmflow sandbox`` prints once it listens."""
    faults = ", ".join(rule.spec() for rule in config.faults) or "none"
    return "\n".join([
        f"etrmflow sandbox vendor listening on {base_url}",
        f"  dataset:        seed={config.seed} trades={config.trades} settlements={config.settlements}",
        f"  oauth2 token:   POST {base_url}/oauth2/token",
        f"    client_credentials: client_id={config.client_id} client_secret={config.client_secret}",
        f"    password:           username={config.username} password={config.password}",
        f"  api key:        X-API-Key: {config.api_key}   (or ?api_key=...)",
        f"  static token:   Authorization: Bearer {config.static_token}",
        f"  faults:         {faults}",
        f"  stats:          GET {base_url}/_sandbox/stats",
        "Press Ctrl-C to stop.",
    ])


async def _serve_until_stopped(config: SandboxConfig, host: str, port: int, out: TextIO) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / off main thread
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
    async with SandboxServer(config, host, port) as server:
        print(banner(config, server.base_url), file=out, flush=True)
        await stopped.wait()


def serve(config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 8765,
          *, out: TextIO | None = None) -> None:
    """Run the sandbox until Ctrl-C or SIGTERM (blocking). Prints the base URL and credentials."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(config or SandboxConfig(), host, port, out or sys.stdout))
