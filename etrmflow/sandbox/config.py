"""What a sandbox vendor serves and how it behaves: ``SandboxConfig``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from etrmflow.sandbox.faults import FaultRule

SCHEME = "sandbox"


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxConfig:
    """Dataset size, credentials, token lifetime and faults of one sandbox vendor.

    Build one directly, or from a URL (what a connector's ``base_url`` may say)::

        SandboxConfig.from_url("sandbox://acme?trades=500&seed=3&token_ttl=5&fault=503:every=4")
    """

    seed: int = 7
    trades: int = 250
    settlements: int = 120
    client_id: str = "demo"
    client_secret: str = "demo-secret"
    username: str = "demo-user"
    password: str = "demo-password"
    api_key: str = "sandbox-key"
    static_token: str = "sandbox-token"
    token_ttl: float = 3600.0
    """Seconds an issued token stays valid, measured by ``clock``."""
    max_page_size: int = 1000
    require_idempotency_key: bool = False
    """Refuse (400) a settlement-instructions POST without an ``Idempotency-Key`` header."""
    faults: tuple[FaultRule, ...] = ()
    clock: Callable[[], float] = dataclasses.field(default=time.monotonic, compare=False, repr=False)
    """Seconds, monotonic; inject a fake one to expire tokens without waiting."""

    def __post_init__(self) -> None:
        for name in ("trades", "settlements"):
            if getattr(self, name) < 0:
                raise ValueError(f"sandbox {name} must be >= 0, got {getattr(self, name)}")
        if self.max_page_size < 1:
            raise ValueError(f"sandbox max_page_size must be >= 1, got {self.max_page_size}")
        if self.token_ttl < 0:
            raise ValueError(f"sandbox token_ttl must be >= 0, got {self.token_ttl}")

    @classmethod
    def url_keys(cls) -> tuple[str, ...]:
        """Query keys a ``sandbox://`` URL may use (``fault`` may repeat)."""
        return (*(f.name for f in dataclasses.fields(cls) if f.name not in ("faults", "clock")), "fault")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> SandboxConfig:
        """A config from ``sandbox://NAME?key=value&fault=SPEC...`` (NAME is free text).

        ``overrides`` (e.g. ``clock=``) win over the URL. Unknown keys and bad values raise
        ValueError naming the key and listing the valid ones.
        """
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            # The URL itself is not repeated: it may hold credentials.
            raise ValueError(f"not a sandbox URL (scheme {parts.scheme!r}); expected {SCHEME}://NAME?key=value...")
        values: dict[str, Any] = {}
        faults: list[FaultRule] = []
        for key, raw in parse_qsl(parts.query, keep_blank_values=True):
            if key == "fault":
                faults.append(FaultRule.parse(raw))
            elif key in cls.url_keys():
                values[key] = _convert(key, raw)
            else:
                raise ValueError(f"unknown sandbox URL key {key!r}; "
                                 f"valid keys: {', '.join(cls.url_keys())}")
        if faults:
            values["faults"] = tuple(faults)
        return cls(**{**values, **overrides})


def _boolean(raw: str) -> bool:
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValueError(raw)


_FIELD_TYPES: dict[str, Callable[[str], Any]] = {
    "seed": int, "trades": int, "settlements": int, "max_page_size": int, "token_ttl": float,
    "require_idempotency_key": _boolean}
_EXPECTED = {int: "an integer", float: "a number", _boolean: "true or false"}


def _convert(key: str, raw: str) -> Any:
    kind = _FIELD_TYPES.get(key, str)
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"sandbox URL key {key!r} must be {_EXPECTED[kind]}, got {raw!r}") from None
