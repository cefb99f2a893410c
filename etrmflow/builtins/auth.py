"""Built-in auth schemes. Credentials stay ``${secret:NAME}`` markers here; the HTTP client
resolves them as the request leaves, so nothing in this module ever holds a secret value."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from etrmflow import hookimpl
from etrmflow.clock import Clock
from etrmflow.components import Auth, HttpClient, Request, Response
from etrmflow.errors import (
    AuthError,
    CredentialsRejected,
    FetchError,
    RetriableFetchError,
)
from etrmflow.secrets import REDACTOR

_STRING = {"type": "string", "minLength": 1}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


class NoAuth(Auth):
    """No credentials (public endpoints).

    Example::

        auth: {type: none}
    """

    type_name: ClassVar[str] = "none"
    options_schema: ClassVar[dict[str, Any]] = _object({}, [])


class Bearer(Auth):
    """A static bearer token in the Authorization header.

    Example::

        auth: {type: bearer, token: "{{ secret('ACME_TOKEN') }}"}
    """

    type_name: ClassVar[str] = "bearer"
    options_schema: ClassVar[dict[str, Any]] = _object({"token": _STRING}, ["token"])

    async def apply(self, request: Request, client: HttpClient) -> Request:
        request.headers["Authorization"] = f"Bearer {self.options['token']}"
        return request


class ApiKey(Auth):
    """An API key in a header or in the query string.

    Example::

        auth: {type: api_key, in: header, name: X-API-Key, value: "{{ secret('ACME_API_KEY') }}"}
    """

    type_name: ClassVar[str] = "api_key"
    options_schema: ClassVar[dict[str, Any]] = _object({
        "in": {"enum": ["header", "query"], "description": "Where the key goes (default header)."},
        "name": {**_STRING, "description": "Header or query parameter name (default X-API-Key)."},
        "value": {**_STRING, "description": "The key; use secret()."},
    }, ["value"])

    async def apply(self, request: Request, client: HttpClient) -> Request:
        name = self.options.get("name", "X-API-Key")
        if self.options.get("in", "header") == "query":
            request.params[name] = self.options["value"]
        else:
            request.headers[name] = self.options["value"]
        return request

    def describe(self) -> str:
        return f"api_key in {self.options.get('in', 'header')} {self.options.get('name', 'X-API-Key')}"


class Basic(Auth):
    """HTTP Basic authentication.

    Example::

        auth: {type: basic, username: ops, password: "{{ secret('ACME_PASSWORD') }}"}
    """

    type_name: ClassVar[str] = "basic"
    options_schema: ClassVar[dict[str, Any]] = _object({"username": _STRING, "password": _STRING},
                                                       ["username", "password"])

    async def apply(self, request: Request, client: HttpClient) -> Request:
        request.basic_auth = (self.options["username"], self.options["password"])
        return request


_OAUTH_COMMON = {
    "token_url": {**_STRING, "description": "Token endpoint: a path on base_url or an absolute URL."},
    "scopes": {"type": "array", "items": {"type": "string"}, "description": "Scopes to request."},
    "audience": {"type": "string"},
    "token_field": {**_STRING, "description": "Response field holding the token to use (default access_token; e.g. id_token)."},
    "refresh_at": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                   "description": "Refresh when this fraction of the token lifetime has passed (default 0.8)."},
    "default_expires_in": {"type": "number", "exclusiveMinimum": 0,
                           "description": "Lifetime in seconds when the response has no expires_in (default 3600)."},
    "extra_params": {"type": "object", "description": "Extra form fields for the token request."},
}


class _OAuth2(Auth):
    """Token-endpoint auth with one shared, cached token (single flight) and proactive refresh."""

    grant_type: ClassVar[str]

    def __init__(self, options: Any, *, clock: Clock | None = None) -> None:
        super().__init__(options, clock=clock)
        self._token: str | None = None
        self._refresh_after = 0.0
        self._lock = asyncio.Lock()

    def form(self) -> dict[str, Any]:
        raise NotImplementedError

    def basic_credentials(self) -> tuple[str, str] | None:
        return None

    async def apply(self, request: Request, client: HttpClient) -> Request:
        token = await self._current(client)
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    async def refresh(self, client: HttpClient) -> bool:
        stale = self._token
        async with self._lock:
            # Several requests may see the same 401: the first refreshes, the others reuse its token.
            if self._token is None or self._token == stale:
                self._token = None
                await self._request_token(client)
        return True

    async def _current(self, client: HttpClient) -> str:
        if self._token is not None and self.clock.monotonic() < self._refresh_after:
            return self._token
        async with self._lock:  # single flight: concurrent requests share one token request
            if self._token is None or self.clock.monotonic() >= self._refresh_after:
                await self._request_token(client)
        assert self._token is not None
        return self._token

    async def _request_token(self, client: HttpClient) -> None:
        form = {"grant_type": self.grant_type, **self.form(), **(self.options.get("extra_params") or {})}
        if self.options.get("scopes"):
            form["scope"] = " ".join(self.options["scopes"])
        if self.options.get("audience"):
            form["audience"] = self.options["audience"]
        request = Request(method="POST", url=self.options["token_url"], data=form,
                          headers={"Accept": "application/json"}, basic_auth=self.basic_credentials())
        try:
            response = await client.send(request)
        except RetriableFetchError:
            raise  # a dropped connection to the token endpoint is worth another attempt
        except FetchError as exc:
            raise AuthError(f"token request to {self.options['token_url']} failed: {exc}", status=exc.status) from None
        self._accept(response)

    def _accept(self, response: Response) -> None:
        body = response.body if isinstance(response.body, dict) else {}
        if response.status == 429 or response.status >= 500:
            # Throttled or down is not a refusal: the request's retry policy tries again.
            raise RetriableFetchError(f"token endpoint {self.options['token_url']} answered {response.status}",
                                      status=response.status)
        if response.status >= 400 or "error" in body:
            error = body.get("error", f"HTTP {response.status}")
            raise CredentialsRejected(f"token endpoint refused the credentials: {error} "
                                      f"(check client id and secret; this is not retried)", status=response.status)
        field = self.options.get("token_field", "access_token")
        token = body.get(field)
        if not isinstance(token, str) or not token:
            raise AuthError(f"token response has no '{field}' field (fields: {', '.join(sorted(body))})")
        lifetime = _seconds(body.get("expires_in"), self.options.get("default_expires_in", 3600.0))
        REDACTOR.add(token)  # a credential like any secret: masked everywhere, quarantined if echoed
        self._token = token
        self._refresh_after = self.clock.monotonic() + lifetime * self.options.get("refresh_at", 0.8)

    def describe(self) -> str:
        return f"{self.type_name} via {self.options['token_url']}"


def _seconds(value: Any, default: float) -> float:
    try:
        return float(value) if value is not None else float(default)
    except (TypeError, ValueError):
        return float(default)


class OAuth2ClientCredentials(_OAuth2):
    """OAuth2 client credentials grant, token cached and refreshed before it expires.

    Example::

        auth:
          type: oauth2_client_credentials
          token_url: /oauth2/token
          client_id: "{{ env_var('ACME_CLIENT_ID', 'demo') }}"
          client_secret: "{{ secret('ACME_CLIENT_SECRET') }}"
          scopes: [trade:read]
          refresh_at: 0.8
    """

    type_name: ClassVar[str] = "oauth2_client_credentials"
    grant_type: ClassVar[str] = "client_credentials"
    options_schema: ClassVar[dict[str, Any]] = _object({
        **_OAUTH_COMMON, "client_id": _STRING, "client_secret": _STRING,
        "credentials_in": {"enum": ["body", "basic"], "description": "Send client credentials in the form (default) or as HTTP Basic."},
    }, ["token_url", "client_id", "client_secret"])

    def _in_basic(self) -> bool:
        return self.options.get("credentials_in", "body") == "basic"

    def form(self) -> dict[str, Any]:
        if self._in_basic():
            return {}
        return {"client_id": self.options["client_id"], "client_secret": self.options["client_secret"]}

    def basic_credentials(self) -> tuple[str, str] | None:
        return (self.options["client_id"], self.options["client_secret"]) if self._in_basic() else None


class OAuth2Password(_OAuth2):
    """OAuth2 resource owner password grant; pick the token field the API wants (e.g. id_token).

    Example::

        auth:
          type: oauth2_password
          token_url: /oauth2/token
          username: "{{ env_var('ACME_USER') }}"
          password: "{{ secret('ACME_PASSWORD') }}"
          token_field: id_token
    """

    type_name: ClassVar[str] = "oauth2_password"
    grant_type: ClassVar[str] = "password"
    options_schema: ClassVar[dict[str, Any]] = _object({
        **_OAUTH_COMMON, "username": _STRING, "password": _STRING, "client_id": _STRING, "client_secret": _STRING,
    }, ["token_url", "username", "password"])

    def form(self) -> dict[str, Any]:
        fields = {"username": self.options["username"], "password": self.options["password"]}
        for key in ("client_id", "client_secret"):
            if key in self.options:
                fields[key] = self.options[key]
        return fields


@hookimpl
def etrmflow_auth_types() -> list[type[Auth]]:
    return [NoAuth, Bearer, ApiKey, Basic, OAuth2ClientCredentials, OAuth2Password]
