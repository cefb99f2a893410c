"""A hostile or broken vendor's HTTP answers against the real CLI in a temp project (real HTTP over
loopback with ``scripted_vendor``): a body too large, or a gzip bomb that is small on the wire,
stops the run with a message while memory stays bounded (``defaults.max_response_size``); a
redirect to another origin never carries the connector's credentials there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from etrmflow.testing import Answer, EtrmflowProject, ScriptedRequest, ScriptedVendor

CONTRACT = """\
name: deal
version: "1"
primary_key: [deal_id]
schema:
  type: object
  required: [deal_id]
  properties:
    deal_id: {type: string}
"""
PIPELINE = """\
name: deals
source: {connector: vendor, stream: deals}
contract: deal
sinks:
  - {type: sqlite, table: deals, mode: upsert}
"""
SECRET = "tok-very-secret-123"
MiB = 1024 * 1024

Serve = Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]


def make_project(project: EtrmflowProject, vendor: ScriptedVendor, *, auth: str = "{type: none}",
                 defaults: str = "  retry: {max_attempts: 1}\n", extra: str = "",
                 base_url: str | None = None) -> EtrmflowProject:
    connector = (f"name: vendor\nbase_url: \"{{{{ env_var('VENDOR_URL') }}}}\"\nauth: {auth}\n{extra}"
                 f"defaults:\n{defaults}"
                 "streams:\n  deals:\n    path: /deals\n    records: $.deals\n    paginator: {type: single}\n")
    project.write({"contracts/deal.yml": CONTRACT, "connectors/vendor.yml": connector, "pipelines/deals.yml": PIPELINE})
    project.env["VENDOR_URL"] = base_url or vendor.url
    project.env["API_TOKEN"] = SECRET
    return project


def gzip_of_zeros(size: int) -> bytes:
    """``size`` bytes of zeros gzip-compressed, built a MiB at a time (about 1/1000 on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MiB)
    parts = [packer.compress(block) for _ in range(size // MiB)]
    return b"".join([*parts, packer.flush()])


# --- the size of an answer ---------------------------------------------------------------------------------

def test_a_gzip_bomb_fails_the_run_with_the_limit_and_memory_stays_bounded(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """300 MiB once inflated, 300 KB on the wire: the whole body was read (768 MB resident). In a
    child process that reports its own peak resident memory."""
    bomb = gzip_of_zeros(300 * MiB)
    vendor = scripted_vendor(lambda request: Answer(body=bomb, headers={"Content-Encoding": "gzip"}))
    project = make_project(etrmflow_project, vendor,
                           defaults="  retry: {max_attempts: 3}\n  max_response_size: 8MiB\n")
    peak = ("import atexit, resource, runpy, sys; atexit.register(lambda: sys.stderr.write("
            "'PEAK_KIB %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)); "
            "sys.argv = ['etrmflow', 'run', 'pipelines/deals.yml']; runpy.run_module('etrmflow', run_name='__main__')")
    environment = {**os.environ, **{k: v for k, v in project.env.items() if v is not None}}

    done = subprocess.run([sys.executable, "-c", peak], cwd=project.root, env=environment, capture_output=True,
                          text=True, timeout=300, check=False)

    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"GET {vendor.url}/deals answered a body larger than 8MiB (counted once decompressed), the most "
            "connector vendor (connectors/vendor.yml) accepts; if the vendor's pages really are that large, raise "
            "defaults.max_response_size (e.g. max_response_size: 32MiB)") in done.stdout
    assert len(vendor.requests) == 1  # not retried: the same answer would come again
    peak_mib = int(done.stderr.split("PEAK_KIB ")[1].split()[0]) / 1024
    # Unbounded, the whole 300 MiB is inflated (~1,350 MiB peak). Bounded, the peak is the process
    # (~140 MiB) plus what aiohttp inflates from the chunks already received, more on a loaded machine.
    assert peak_mib < 400, f"peak resident memory {peak_mib:.0f} MiB for an 8 MiB limit"


def test_a_plain_body_over_the_limit_fails_without_a_retry_and_shows_no_secret(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    page = {"deals": [{"deal_id": f"D{i:05d}"} for i in range(400)]}  # about 8 KiB
    vendor = scripted_vendor(lambda request: page)
    project = make_project(etrmflow_project, vendor, auth="{type: api_key, in: query, name: key, "
                           "value: \"{{ secret('API_TOKEN') }}\"}", defaults="  max_response_size: 2KiB\n")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert (f"GET {vendor.url}/deals?key=*** answered a body larger than 2KiB (counted once decompressed)"
            in result.stdout)
    assert "raise defaults.max_response_size (e.g. max_response_size: 8KiB)" in result.stdout
    assert len(vendor.requests) == 1  # the default retry policy (5 attempts) does not retry it
    assert SECRET not in result.output
    assert project.files_containing(SECRET) == []


@pytest.mark.parametrize("limit", ["64KiB", "0.5MB", "20000"])
def test_max_response_size_raises_the_limit(etrmflow_project: EtrmflowProject, scripted_vendor: Serve,
                                            limit: str) -> None:
    page = {"deals": [{"deal_id": f"D{i:05d}"} for i in range(400)]}
    vendor = scripted_vendor(lambda request: page)
    project = make_project(etrmflow_project, vendor, defaults="  max_response_size: 2KiB\n")
    assert project.run("run", "pipelines/deals.yml").exit_code == 1

    make_project(project, vendor, defaults=f"  max_response_size: {limit}\n")
    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert project.query("SELECT COUNT(*) FROM deals") == [(400,)]
    assert project.plan()["pipelines"][0]["connector"]["max_response_size"] == {
        "64KiB": 65536, "0.5MB": 500_000, "20000": 20000}[limit]


def test_the_default_limit_is_256_mib_in_the_plan(etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "A"}]})
    project = make_project(etrmflow_project, vendor)

    assert project.run("run", "pipelines/deals.yml").exit_code == 0
    assert project.plan()["pipelines"][0]["connector"]["max_response_size"] == 256 * MiB


@pytest.mark.parametrize("limit", ["0MB", "12 parsecs", "-5"])
def test_a_malformed_limit_is_a_located_error(etrmflow_project: EtrmflowProject, scripted_vendor: Serve,
                                            limit: str) -> None:
    vendor = scripted_vendor(lambda request: {"deals": []})
    project = make_project(etrmflow_project, vendor, defaults=f"  max_response_size: {limit}\n")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 2, result.output
    assert "connectors/vendor.yml:5:22: defaults.max_response_size" in result.output
    assert vendor.requests == []


# --- redirects -------------------------------------------------------------------------------------------

AUTHS = {
    "header_key": "{type: api_key, in: header, name: X-Key, value: \"{{ secret('API_TOKEN') }}\"}",
    "query_key": "{type: api_key, in: query, name: k, value: \"{{ secret('API_TOKEN') }}\"}",
    "bearer": "{type: bearer, token: \"{{ secret('API_TOKEN') }}\"}",
    "basic": "{type: basic, username: u, password: \"{{ secret('API_TOKEN') }}\"}",
}


def leaks(requests: list[ScriptedRequest]) -> list[str]:
    """What of the credentials, in any spelling the redactor knows, reached a vendor."""
    from etrmflow.secrets import Redactor

    redactor = Redactor()
    redactor.add(SECRET)
    seen = json.dumps([[r.path, r.query, r.headers] for r in requests])
    found = [name for name in ("x-key", "authorization", "x-subscription", "cookie")
             if name in seen.lower()]
    return found + (["the secret"] if redactor.redact(seen) != seen else [])


@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_a_redirect_to_another_origin_carries_no_credential(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, auth: str) -> None:
    """aiohttp dropped only Authorization on a redirect to another host: an API key header (and
    the connector's own headers) went along. The other host is asked as a stranger."""
    other = scripted_vendor(lambda request: {"deals": [{"deal_id": "ELSEWHERE"}]})
    vendor = scripted_vendor(lambda request: Answer(status=302, headers={"Location": f"{other.url}/export?x=1"}))
    project = make_project(etrmflow_project, vendor, auth=AUTHS[auth],
                           extra="headers: {X-Subscription: \"{{ secret('API_TOKEN') }}\"}\n")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert [(r.path, r.query) for r in other.requests] == [("/export", {"x": "1"})]
    assert leaks(other.requests) == []
    assert leaks(vendor.requests) != []  # the vendor itself did get them: the check can see a leak
    assert project.query("SELECT deal_id FROM deals") == [("ELSEWHERE",)]


def test_a_redirect_to_another_origin_with_the_query_key_in_its_location_is_refused(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """A vendor that echoes the query (the key included) into a Location on another host."""
    other = scripted_vendor(lambda request: {"deals": [{"deal_id": "ELSEWHERE"}]})
    vendor = scripted_vendor(lambda request: Answer(
        status=301, headers={"Location": f"{other.url}/deals?k={request.query.get('k')}"}))
    project = make_project(etrmflow_project, vendor, auth=AUTHS["query_key"])

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert (f"GET {vendor.url}/deals?k=%24%7Bsecret%3AAPI_TOKEN%7D redirected (status 301) to another origin, "
            f"{other.url}/deals, with a credential in its URL: etrmflow does not send it there") in result.stdout
    assert other.requests == []
    assert SECRET not in result.output


def test_cookies_of_the_vendor_stay_with_the_vendor(etrmflow_project: EtrmflowProject,
                                                   scripted_vendor: Serve) -> None:
    """Cookies know no ports: on ``localhost`` the vendor's session cookie went to any port."""
    other = scripted_vendor(lambda request: {"deals": [{"deal_id": "ELSEWHERE"}]})
    port = other.url.rsplit(":", 1)[1]
    vendor = scripted_vendor(lambda request: Answer(status=302, headers={
        "Location": f"http://localhost:{port}/deals", "Set-Cookie": f"session={SECRET}; Path=/"}))
    project = make_project(etrmflow_project, vendor, base_url=vendor.url.replace("127.0.0.1", "localhost"))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert len(other.requests) == 1
    assert leaks(other.requests) == []


def test_a_redirect_on_the_same_origin_keeps_the_credentials(etrmflow_project: EtrmflowProject,
                                                            scripted_vendor: Serve) -> None:
    def answer(request: ScriptedRequest) -> Any:
        if request.headers.get("X-Key") != SECRET:
            return Answer(status=401, body={"error": "no key"})
        if request.path == "/deals":
            return Answer(status=307, headers={"Location": "/v2/deals?moved=1"})
        return {"deals": [{"deal_id": "MOVED"}]}
    vendor = scripted_vendor(answer)
    project = make_project(etrmflow_project, vendor, auth=AUTHS["header_key"])

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert [(r.path, r.query) for r in vendor.requests] == [("/deals", {}), ("/v2/deals", {"moved": "1"})]
    assert project.query("SELECT deal_id FROM deals") == [("MOVED",)]


def test_a_redirect_loop_stops_after_ten_hops(etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    vendor = scripted_vendor(lambda request: Answer(status=302, headers={
        "Location": f"/deals{int(request.path[6:] or 0) + 1}"}))
    project = make_project(etrmflow_project, vendor)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert f"GET {vendor.url}/deals11 redirected more than 10 times; check the URL with the vendor" in result.stdout
    assert len(vendor.requests) == 11


def test_a_token_request_redirected_to_another_origin_keeps_its_client_secret(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """A 307 asks for the same POST, body included, elsewhere: the body holds the client secret."""
    other = scripted_vendor(lambda request: {"access_token": "stolen", "expires_in": 3600})
    vendor = scripted_vendor(lambda request: Answer(status=307, headers={"Location": f"{other.url}/token"}))
    project = make_project(etrmflow_project, vendor, auth=(
        "{type: oauth2_client_credentials, token_url: /oauth2/token, client_id: me, "
        "client_secret: \"{{ secret('API_TOKEN') }}\"}"))

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code != 0, result.output
    assert (f"POST {vendor.url}/oauth2/token redirected (status 307) to another origin, {other.url}/token, and asks "
            "for the request body to be sent there") in result.output
    assert other.requests == []
    assert SECRET not in result.output


def test_redirect_hops_share_the_request_timeout(etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """Each hop answers well within ``total``; together they do not. Before, every hop had a
    ``total`` of its own, so ten slow hops could hold a request ten times its timeout."""
    def slow_hop(request: ScriptedRequest) -> Answer:
        time.sleep(0.4)
        hop = int(request.path[6:] or 0)
        if hop < 4:
            return Answer(status=302, headers={"Location": f"/deals{hop + 1}"})
        return Answer(body={"deals": [{"deal_id": "D-1"}]})

    vendor = scripted_vendor(slow_hop)
    project = make_project(etrmflow_project, vendor, defaults="  retry: {max_attempts: 1}\n  timeout: {total: 1s}\n")

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert "timed out" in result.stdout
    assert len(vendor.requests) < 5
