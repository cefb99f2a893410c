"""``POST /oauth2/token``: the OAuth2 client-credentials and password grants.

Client credentials may come in the form body or as HTTP Basic (RFC 6749 2.3.1). The password
grant answers like a real vendor we integrate with: it adds an ``id_token`` (the token that
vendor's API actually wants) and a ``refresh_token``, and sends ``expires_in`` as a string.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from urllib.parse import unquote

import orjson
from aiohttp import web
from multidict import MultiDictProxy

from etrmflow.sandbox.config import SandboxConfig
from etrmflow.sandbox.responses import json_response
from etrmflow.sandbox.state import STATE_KEY, SandboxState

DEFAULT_SCOPE = "trade:read settlement:read settlement:write"


def _basic_credentials(request: web.Request) -> tuple[str | None, str | None]:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""  # present but unreadable: refused below
    return (unquote(user), unquote(password)) if colon else ("", "")


def _client(request: web.Request, form: MultiDictProxy) -> tuple[str | None, str | None]:
    client_id, client_secret = _basic_credentials(request)
    if client_id is None:
        client_id, client_secret = _text(form, "client_id"), _text(form, "client_secret")
    return client_id, client_secret


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _id_token(config: SandboxConfig, state: SandboxState) -> str:
    """A JWT-shaped id token (unsigned in spirit: the sandbox only checks it was issued)."""
    now = int(time.time())
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    claims = _b64url(orjson.dumps({"sub": config.username, "aud": config.client_id, "iat": now,
                                   "exp": now + int(config.token_ttl)}))
    token = f"{header}.{claims}.{_b64url(secrets.token_bytes(32))}"
    state.tokens.register(token)
    return token


def _refused() -> web.Response:
    return json_response({"error": "invalid_client"}, status=401,
                         headers={"WWW-Authenticate": 'Basic realm="sandbox"'})


async def token_endpoint(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    config = state.config
    form = await request.post()
    grant = form.get("grant_type")
    client_id, client_secret = _client(request, form)
    scope = str(form.get("scope") or DEFAULT_SCOPE)
    if grant == "client_credentials":
        if not (_matches(client_id, config.client_id) and _matches(client_secret, config.client_secret)):
            return _refused()
        state.stats.tokens_issued += 1
        return json_response({"access_token": state.tokens.issue(), "token_type": "Bearer",
                              "expires_in": int(config.token_ttl), "scope": scope})
    if grant == "password":
        # A public client may leave the secret out, but what it does send must be right.
        client_ok = (client_id is None or _matches(client_id, config.client_id)) and (
            client_secret is None or _matches(client_secret, config.client_secret))
        user_ok = _matches(_text(form, "username"), config.username) and _matches(
            _text(form, "password"), config.password)
        if not (client_ok and user_ok):
            return _refused()
        state.stats.tokens_issued += 1
        return json_response({"access_token": state.tokens.issue(), "id_token": _id_token(config, state),
                              "refresh_token": secrets.token_urlsafe(32), "token_type": "Bearer",
                              "expires_in": str(int(config.token_ttl)), "scope": scope})
    return json_response({"error": "unsupported_grant_type"}, status=400)


def _text(form: MultiDictProxy, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None
