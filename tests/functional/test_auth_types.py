"""Every auth type against the sandbox vendor: the run gets every trade exactly once."""

from __future__ import annotations

import pytest

from etrmflow.testing import EtrmflowProject, SandboxFactory

from . import PAGE_SIZE, TRADES, assert_every_trade_once, sandbox_project

PAGES = -(-TRADES // PAGE_SIZE)
SECRET = "{{ secret('VENDOR_SECRET') }}"
CLIENT_CREDENTIALS = ("{type: oauth2_client_credentials, token_url: /oauth2/token, client_id: demo, "
                      f"client_secret: \"{SECRET}\"")
PASSWORD = ("{type: oauth2_password, token_url: /oauth2/token, username: demo-user, "
            f"password: \"{SECRET}\", token_field: id_token}}")

AUTH_CASES = {
    # name: (auth block, stream path, VENDOR_SECRET value, token requests expected)
    "bearer": (f'{{type: bearer, token: "{SECRET}"}}', "/api/v2/trades", "sandbox-token", 0),
    "api_key_header": (f'{{type: api_key, in: header, name: X-API-Key, value: "{SECRET}"}}',
                       "/api/v2/trades", "sandbox-key", 0),
    "api_key_query": (f'{{type: api_key, in: query, name: api_key, value: "{SECRET}"}}',
                      "/api/v2/trades", "sandbox-key", 0),
    "oauth2_client_credentials": (CLIENT_CREDENTIALS + "}", "/api/v2/trades", "demo-secret", 1),
    "oauth2_client_credentials_basic": (CLIENT_CREDENTIALS + ", credentials_in: basic}", "/api/v2/trades",
                                        "demo-secret", 1),
    "oauth2_password_id_token": (PASSWORD, "/api/v2/trades", "demo-password", 1),
}


@pytest.mark.parametrize("case", sorted(AUTH_CASES))
def test_auth_type_loads_every_trade_once(case: str, etrmflow_project: EtrmflowProject,
                                          sandbox_vendor_factory: SandboxFactory) -> None:
    auth, path, secret, token_requests = AUTH_CASES[case]
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=auth, path=path)

    result = project.run("run", "pipelines/trades.yml", env={"VENDOR_SECRET": secret})

    assert result.exit_code == 0, result.output
    assert_every_trade_once(project, vendor, pages=PAGES)
    assert vendor.stats()["requests"].get("/oauth2/token", 0) == token_requests
    assert vendor.stats()["tokens_issued"] == token_requests


def test_no_auth_on_a_public_endpoint(etrmflow_project: EtrmflowProject,
                                      sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth="{type: none}", path="/public/v1/trades",
                              params="{page_size: 10}", records="$.data",
                              paginator="{type: page_number, param: page, has_more: $.next_page}")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert_every_trade_once(project, vendor, pages=PAGES)


def test_no_auth_on_a_protected_endpoint_fails_with_the_vendors_401(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth="{type: none}")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    error = project.pipeline_result()["error"]
    assert error.startswith("GET http://127.0.0.1:")
    assert error.endswith('/api/v2/trades?limit=10 answered 401 Unauthorized: {"error":"unauthorized"}')
    assert vendor.stats()["data_requests"] == 1


WRONG_CREDENTIALS = {
    # name: (auth block, the message the user sees, token requests, data requests, exit code)
    # A token endpoint's refusal is a configuration error (2); a data call's 401 fails the run (1).
    "oauth2_client_credentials": (CLIENT_CREDENTIALS + "}", "token endpoint refused the credentials: "
                                  "invalid_client (check client id and secret; this is not retried)", 1, 0, 2),
    "oauth2_password": (PASSWORD, "token endpoint refused the credentials: invalid_client "
                        "(check client id and secret; this is not retried)", 1, 0, 2),
    "bearer": (f'{{type: bearer, token: "{SECRET}"}}', "answered 401 Unauthorized", 0, 1, 1),
    "api_key_query": (f'{{type: api_key, in: query, name: api_key, value: "{SECRET}"}}',
                      "answered 401 Unauthorized", 0, 1, 1),
}


@pytest.mark.parametrize("case", sorted(WRONG_CREDENTIALS))
def test_wrong_credentials_fail_clearly_without_the_secret(case: str, etrmflow_project: EtrmflowProject,
                                                           sandbox_vendor_factory: SandboxFactory) -> None:
    auth, message, token_requests, data_requests, exit_code = WRONG_CREDENTIALS[case]
    wrong = f"wrong-{case}-credential-4f1d2a"
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=auth)

    result = project.run("run", "pipelines/trades.yml", env={"VENDOR_SECRET": wrong})

    assert result.exit_code == exit_code, result.output
    assert "--resume" not in result.stdout  # nothing was written: there is nothing to resume
    assert message in project.pipeline_result()["error"]
    assert f"error: {project.pipeline_result()['error']}" in result.stdout
    assert wrong not in result.stdout + result.stderr
    assert project.files_containing(wrong) == []
    assert vendor.stats()["requests"].get("/oauth2/token", 0) == token_requests
    assert vendor.stats()["data_requests"] == data_requests
    assert project.tables() == []
