"""The built-in auth schemes against a fake token endpoint and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from etrmflow.builtins.auth import (
    ApiKey, Basic, Bearer, NoAuth, OAuth2ClientCredentials, OAuth2Password, etrmflow_auth_types,
)
from etrmflow.clock import FakeClock
from etrmflow.components import HttpClient, Request, Response
from etrmflow.errors import AuthError, FatalFetchError, RetriableFetchError

SECRET = "${secret:VENDOR_SECRET}"
REFUSED = ("token endpoint refused the credentials: invalid_client "
           "(check client id and secret; this is not retried)")


class FakeTokenEndpoint(HttpClient):
    """Answers token requests with numbered tokens (or canned answers) and records them."""

    def __init__(self, answer: Callable[[int], Response] | None = None, *, expires_in: Any = 100) -> None:
        self.requests: list[Request] = []
        self.answer = answer or (lambda n: Response(status=200, headers={}, url="/oauth2/token", body={
            "access_token": f"access-{n}", "id_token": f"id-{n}", "expires_in": expires_in}))

    async def send(self, request: Request) -> Response:
        self.requests.append(request)
        await asyncio.sleep(0)  # a real request yields: let concurrent callers pile up meanwhile
        await asyncio.sleep(0)
        return self.answer(len(self.requests))


def refused(status: int = 401, body: Any = None) -> Callable[[int], Response]:
    return lambda n: Response(status=status, headers={}, url="/oauth2/token",
                              body={"error": "invalid_client"} if body is None else body)


def authorization(auth: Any, client: HttpClient) -> str:
    request = asyncio.run(auth.apply(Request(method="GET", url="/t"), client))
    return request.headers["Authorization"]


def client_credentials(clock: FakeClock | None = None, **options: Any) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials({"token_url": "/oauth2/token", "client_id": "demo", "client_secret": SECRET,
                                    **options}, clock=clock or FakeClock())


def test_every_builtin_auth_type_is_registered() -> None:
    assert {cls.type_name for cls in etrmflow_auth_types()} == {
        "none", "bearer", "api_key", "basic", "oauth2_client_credentials", "oauth2_password"}


# --- static credentials: markers go into the request, never values ----------------------------

def test_static_schemes_put_the_secret_marker_where_it_belongs() -> None:
    def apply(auth: Any) -> Request:
        return asyncio.run(auth.apply(Request(method="GET", url="/t", params={"page": 1}), FakeTokenEndpoint()))

    assert apply(NoAuth({})) == Request(method="GET", url="/t", params={"page": 1})
    assert apply(Bearer({"token": SECRET})).headers == {"Authorization": f"Bearer {SECRET}"}
    assert apply(ApiKey({"value": SECRET})).headers == {"X-API-Key": SECRET}
    query = apply(ApiKey({"value": SECRET, "in": "query", "name": "api_key"}))
    assert (query.params, query.headers) == ({"page": 1, "api_key": SECRET}, {})
    assert apply(Basic({"username": "ops", "password": SECRET})).basic_auth == ("ops", SECRET)


# --- OAuth2 ------------------------------------------------------------------------------------

def test_client_credentials_in_the_form() -> None:
    endpoint = FakeTokenEndpoint()
    auth = client_credentials(scopes=["trade:read", "settlement:read"], audience="api",
                              extra_params={"resource": "trades"})

    assert authorization(auth, endpoint) == "Bearer access-1"
    (request,) = endpoint.requests
    assert (request.method, request.url, request.headers, request.basic_auth) == (
        "POST", "/oauth2/token", {"Accept": "application/json"}, None)
    assert request.data == {"grant_type": "client_credentials", "client_id": "demo", "client_secret": SECRET,
                            "resource": "trades", "scope": "trade:read settlement:read", "audience": "api"}


def test_client_credentials_as_http_basic() -> None:
    endpoint = FakeTokenEndpoint()

    assert authorization(client_credentials(credentials_in="basic"), endpoint) == "Bearer access-1"
    (request,) = endpoint.requests
    assert (request.data, request.basic_auth) == ({"grant_type": "client_credentials"}, ("demo", SECRET))


def test_password_grant_uses_the_token_field_asked_for_and_a_string_expires_in() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(expires_in="120")
    auth = OAuth2Password({"token_url": "/oauth2/token", "username": "demo-user", "password": SECRET,
                           "client_id": "demo", "token_field": "id_token"}, clock=clock)

    assert authorization(auth, endpoint) == "Bearer id-1"
    clock.advance(120 * 0.8 - 0.001)
    assert authorization(auth, endpoint) == "Bearer id-1"
    clock.advance(0.001)
    assert authorization(auth, endpoint) == "Bearer id-2"
    assert endpoint.requests[0].data == {"grant_type": "password", "username": "demo-user", "password": SECRET,
                                         "client_id": "demo"}


def test_twenty_concurrent_requests_share_one_token_request() -> None:
    endpoint = FakeTokenEndpoint()
    auth = client_credentials()

    async def twenty() -> list[Request]:
        return await asyncio.gather(*(auth.apply(Request(method="GET", url=f"/t/{n}"), endpoint)
                                      for n in range(20)))

    requests = asyncio.run(twenty())

    assert len(endpoint.requests) == 1
    assert {r.headers["Authorization"] for r in requests} == {"Bearer access-1"}


@pytest.mark.parametrize(("refresh_at", "lifetime"), [(0.8, 100), (0.5, 100), (1, 60)])
def test_the_token_is_refreshed_once_refresh_at_of_its_lifetime_has_passed(refresh_at: float,
                                                                           lifetime: int) -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(expires_in=lifetime)
    auth = client_credentials(clock, refresh_at=refresh_at)
    due = lifetime * refresh_at

    assert authorization(auth, endpoint) == "Bearer access-1"
    clock.advance(due - 0.01)
    assert authorization(auth, endpoint) == "Bearer access-1"
    clock.advance(0.01)
    assert authorization(auth, endpoint) == "Bearer access-2"
    clock.advance(due - 0.01)
    assert authorization(auth, endpoint) == "Bearer access-2"
    assert len(endpoint.requests) == 2


def test_without_expires_in_the_default_lifetime_applies() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(lambda n: Response(status=200, headers={}, url="", body={"access_token": f"t{n}"}))
    auth = client_credentials(clock, default_expires_in=10)

    authorization(auth, endpoint)
    clock.advance(7.99)
    authorization(auth, endpoint)
    clock.advance(0.01)

    assert authorization(auth, endpoint) == "Bearer t2"


@pytest.mark.parametrize("answer", [refused(401), refused(400), refused(200)])
def test_refused_credentials_are_an_auth_error_asked_once(answer: Callable[[int], Response]) -> None:
    endpoint = FakeTokenEndpoint(answer)

    with pytest.raises(AuthError) as caught:
        authorization(client_credentials(), endpoint)

    assert str(caught.value) == REFUSED
    assert isinstance(caught.value, FatalFetchError)  # the class that tenacity never retries
    assert len(endpoint.requests) == 1


def test_a_refusal_without_a_body_names_the_status() -> None:
    with pytest.raises(AuthError) as caught:
        authorization(client_credentials(), FakeTokenEndpoint(refused(403, body="")))

    assert str(caught.value) == ("token endpoint refused the credentials: HTTP 403 "
                                 "(check client id and secret; this is not retried)")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_throttled_or_failing_token_endpoint_is_worth_another_attempt(status: int) -> None:
    with pytest.raises(RetriableFetchError) as caught:
        authorization(client_credentials(), FakeTokenEndpoint(refused(status, body={})))

    assert str(caught.value) == f"token endpoint /oauth2/token answered {status}"
    assert caught.value.status == status


def test_a_token_response_without_the_field_says_which_fields_it_has() -> None:
    auth = OAuth2Password({"token_url": "/t", "username": "u", "password": SECRET, "token_field": "id_token"},
                          clock=FakeClock())
    answer = FakeTokenEndpoint(lambda n: Response(status=200, headers={}, url="",
                                                  body={"access_token": "a", "expires_in": 5}))

    with pytest.raises(AuthError) as caught:
        authorization(auth, answer)

    assert str(caught.value) == "token response has no 'id_token' field (fields: access_token, expires_in)"


def test_refresh_after_a_401_fetches_a_new_token_once_for_all_who_saw_it() -> None:
    endpoint = FakeTokenEndpoint()
    auth = client_credentials()
    assert authorization(auth, endpoint) == "Bearer access-1"

    async def three_requests_saw_the_401() -> list[bool]:
        return await asyncio.gather(*(auth.refresh(endpoint) for _ in range(3)))

    assert asyncio.run(three_requests_saw_the_401()) == [True, True, True]
    assert authorization(auth, endpoint) == "Bearer access-2"
    assert len(endpoint.requests) == 2


def test_static_schemes_do_not_ask_for_a_retry_after_a_401() -> None:
    assert asyncio.run(Bearer({"token": SECRET}).refresh(FakeTokenEndpoint())) is False
