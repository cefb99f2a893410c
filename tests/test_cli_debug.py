"""`etrmflow debug CONNECTOR`: each step of reaching a vendor checked, and a failure explained."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from etrmflow.testing import EtrmflowProject

REPO = Path(__file__).resolve().parents[1]
TIMES = re.compile(r"\d+ ms")
PORTS = re.compile(r"127\.0\.0\.1:\d+")


@pytest.fixture
def project(etrmflow_project: EtrmflowProject) -> EtrmflowProject:
    etrmflow_project.copy_from(REPO, "connectors")
    etrmflow_project.env.update(ACME_BASE_URL=None, ACME_CLIENT_ID=None, ACME_CLIENT_SECRET=None)
    return etrmflow_project


def shown(stdout: str) -> str:
    """Ports and timings vary from run to run."""
    return TIMES.sub("N ms", PORTS.sub("127.0.0.1:PORT", stdout))


def test_every_step_passes_against_the_sandbox(project: EtrmflowProject) -> None:
    result = project.run("debug", "acme_etrm")

    assert result.exit_code == 0, result.output
    assert shown(result.stdout) == (
        "connector acme_etrm (connectors/acme_etrm.yml), stream trades\n"
        "OK   connect    127.0.0.1:PORT (127.0.0.1) in N ms\n"
        "OK   token      POST http://127.0.0.1:PORT/oauth2/token: token received in N ms\n"
        "OK   request    GET http://127.0.0.1:PORT/api/v2/trades?limit=100 answered 200 in N ms (45752 bytes)\n"
        "OK   records    100 record(s) found at $.trades\n"
        "OK   paging     cursor: next request GET /api/v2/trades?limit=100&cursor=NzoxMDA\n"
        "All checks passed.\n")


def test_another_stream_and_its_last_page(project: EtrmflowProject) -> None:
    result = project.run("debug", "acme_etrm", "--stream", "settlements", "--vars", "{}")

    assert result.exit_code == 0, result.output
    assert "OK   paging     page_number: next request GET /api/v2/settlements?page_size=100&page=2\n" in result.stdout


def test_refused_credentials_are_reported_at_the_token_step(project: EtrmflowProject) -> None:
    result = project.run("debug", "acme_etrm", env={"ACME_CLIENT_SECRET": "wrong-secret-value"})

    assert result.exit_code == 1
    lines = shown(result.stdout).splitlines()
    assert lines[2:] == [
        ("FAIL token      POST http://127.0.0.1:PORT/oauth2/token: token endpoint refused the credentials: "
         "invalid_client (check client id and secret; this is not retried)"),
        "Stopped at the first failed check."]
    assert "wrong-secret-value" not in result.stdout + result.stderr


def test_a_wrong_records_path_names_the_keys_that_are_there(project: EtrmflowProject) -> None:
    text = project.path("connectors/acme_etrm.yml").read_text(encoding="utf-8")
    project.write({"connectors/acme_etrm.yml": text.replace("records: $.trades", "records: $.items")})

    result = project.run("debug", "acme_etrm")

    assert result.exit_code == 1
    assert shown(result.stdout).splitlines()[-2:] == [
        "FAIL records    records path $.items not found; top-level keys are next_cursor, trades",
        "Stopped at the first failed check."]


def test_an_unreachable_port_is_reported_before_anything_else(project: EtrmflowProject) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = project.run("debug", "acme_etrm", env={"ACME_BASE_URL": f"http://127.0.0.1:{port}"})

    assert result.exit_code == 1
    assert result.stdout.splitlines()[1:] == [
        f"FAIL connect    cannot connect to 127.0.0.1:{port} (127.0.0.1): connection refused",
        "Stopped at the first failed check."]


def test_an_unknown_connector_or_stream_is_a_usage_error(project: EtrmflowProject) -> None:
    unknown = project.run("debug", "acme_etrn")
    stream = project.run("debug", "acme_etrm", "--stream", "trade")

    assert (unknown.exit_code, stream.exit_code) == (2, 2)
    assert "no connector named 'acme_etrn' in connectors/ (did you mean 'acme_etrm'?)" in unknown.stderr
    assert "connector 'acme_etrm' has no stream 'trade' (did you mean 'trades'?)" in stream.stderr
