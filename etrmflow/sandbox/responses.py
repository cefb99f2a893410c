"""JSON responses and request-parameter parsing shared by the sandbox routes."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import orjson
from aiohttp import web


class ApiError(Exception):
    """Answer with a JSON error body, e.g. ``{"error": "invalid_parameter", ...}``."""

    def __init__(self, status: int, error: str, **details: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **details}


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # orjson: a 1,000-trade page encodes several times faster than with the stdlib.
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response(error.body, status=error.status, headers=headers)


def int_param(request: web.Request, name: str, default: int, *, minimum: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", parameter=name,
                       message=f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ApiError(400, "invalid_parameter", parameter=name,
                       message=f"{name} must be >= {minimum}, got {value}")
    return value


def size_param(request: web.Request, name: str, maximum: int, default: int = 100) -> int:
    """A page size: 1 to ``maximum`` (the vendor's cap), else 400 rather than a silent clamp."""
    value = int_param(request, name, min(default, maximum), minimum=1)
    if value > maximum:
        raise ApiError(400, "invalid_parameter", parameter=name,
                       message=f"{name} must be between 1 and {maximum}, got {value}")
    return value


def date_param(request: web.Request, name: str) -> str | None:
    """An optional ``YYYY-MM-DD`` query parameter, returned as given (ISO dates sort as text)."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        dt.date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", parameter=name,
                       message=f"{name} must be a date YYYY-MM-DD, got {raw!r}") from None
    return raw


class FragmentCache:
    """Serialised JSON by key, up to ``limit`` bytes, for data that never changes (the
    generated records of a seed): a page asked for again is served without building it again.

    Once full it admits nothing more rather than evict: a walk longer than the cache, repeated,
    still finds its first pages (evicting the oldest would find none).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._fragments: dict[Hashable, orjson.Fragment] = {}
        self._lock = threading.Lock()  # sandboxes of several threads may share it

    def get(self, key: Hashable, build: Callable[[], Any]) -> orjson.Fragment:
        """The fragment of ``key``, or of what ``build()`` returns (remembered if it fits)."""
        fragment = self._fragments.get(key)
        if fragment is None:
            data = orjson.dumps(build())
            fragment = orjson.Fragment(data)
            with self._lock:
                if self.size + len(data) <= self.limit and key not in self._fragments:
                    self._fragments[key] = fragment
                    self.size += len(data)
        return fragment

    def clear(self) -> None:
        with self._lock:
            self._fragments.clear()
            self.size = 0
