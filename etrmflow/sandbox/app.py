"""The sandbox vendor as an aiohttp application: ``build_app(config)``.

Route map (docs/sandbox.md has the full reference)::

    POST /oauth2/token                      client_credentials or password grant
    GET  /api/v2/trades...                  trades, one endpoint per pagination style (auth)
    GET  /public/v1/trades                  page-number trades, no auth
    GET  /api/v2/settlements                settlements in a date window (auth)
    POST /api/v2/settlement-instructions    idempotent with Idempotency-Key (auth)
    GET  /_sandbox/stats, POST /_sandbox/faults, POST /_sandbox/reset   admin, no auth

Every request under ``/api/`` and ``/public/`` is a *data request*: it is counted, may be
answered by a fault rule (before authentication, as a vendor's gateway would), and under
``/api/`` must carry a credential.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from etrmflow.sandbox.config import SandboxConfig
from etrmflow.sandbox.fault_answers import answer_with_fault
from etrmflow.sandbox.faults import parse_faults
from etrmflow.sandbox.responses import ApiError, error_response, json_response
from etrmflow.sandbox.routes import add_data_routes
from etrmflow.sandbox.state import EXPIRED, STATE_KEY, VALID, SandboxState
from etrmflow.sandbox.tokens import token_endpoint

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DATA_PREFIXES = ("/api/", "/public/")
ADMIN_PREFIX = "/_sandbox/"


def build_app(config: SandboxConfig) -> web.Application:
    """A fresh sandbox application (its own tokens, counters and fault state)."""
    app = web.Application(middlewares=[_sandbox_middleware])
    app[STATE_KEY] = SandboxState(config)
    app.router.add_post("/oauth2/token", token_endpoint)
    add_data_routes(app)
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_post("/_sandbox/faults", _set_faults)
    app.router.add_post("/_sandbox/reset", _reset)
    return app


def sandbox_state(app: web.Application) -> SandboxState:
    """The live state of an app built by ``build_app`` (for in-process tests and tools)."""
    return app[STATE_KEY]


# --- middleware --------------------------------------------------------------------------------

def _route_key(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


@web.middleware
async def _sandbox_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if request.path.startswith(ADMIN_PREFIX):  # reading the stats must not change them
        return await _as_json(handler, request)
    state.stats.requests[_route_key(request)] += 1
    if not request.path.startswith(DATA_PREFIXES):
        return await _as_json(handler, request)
    state.stats.data_requests += 1
    rule = state.faults.pick(request.path)

    async def serve() -> web.StreamResponse:
        return await _authorized(handler, request)

    if rule is None:
        return await serve()
    state.stats.faults_injected[rule.kind] += 1
    return await answer_with_fault(rule, request, state, serve)


async def _as_json(handler: Handler, request: web.Request) -> web.StreamResponse:
    """Run the handler; API errors and aiohttp's own (404, 405) become JSON bodies."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = error.reason.lower().replace(" ", "_")
        return json_response({"error": code}, status=error.status, headers=_allow_header(error))


def _allow_header(error: web.HTTPException) -> dict[str, str]:
    allow = error.headers.get("Allow")
    return {"Allow": allow} if allow else {}


# --- authentication ----------------------------------------------------------------------------

def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _auth_failure(request: web.Request, state: SandboxState) -> str | None:
    """None if the request carries one good credential, else the error code to answer."""
    config = state.config
    if _same(request.headers.get("X-API-Key"), config.api_key):
        return None
    if _same(request.query.get("api_key"), config.api_key):
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return "unauthorized"
    if _same(token, config.static_token):
        return None
    status = state.tokens.status(token)
    if status == VALID:
        return None
    return "token_expired" if status == EXPIRED else "unauthorized"


async def _authorized(handler: Handler, request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        failure = _auth_failure(request, request.app[STATE_KEY])
        if failure is not None:
            challenge = 'Bearer realm="sandbox", error="invalid_token"'
            return json_response({"error": failure}, status=401, headers={"WWW-Authenticate": challenge})
    return await _as_json(handler, request)


# --- admin -------------------------------------------------------------------------------------

async def _stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return json_response({**state.stats.as_dict(), "faults": [rule.spec() for rule in state.faults.rules]})


async def _set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        specs = orjson.loads(await request.read())
        if not isinstance(specs, list):
            raise ValueError("send a JSON list of fault specs, e.g. [\"503:every=4\"]")
        rules = parse_faults(specs)
    except (orjson.JSONDecodeError, ValueError) as error:
        raise ApiError(400, "invalid_faults", message=str(error)) from None
    state.set_faults(rules)
    return json_response({"faults": [rule.spec() for rule in rules]})


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.reset()
    return json_response({"reset": True, "faults": [rule.spec() for rule in state.faults.rules]})
