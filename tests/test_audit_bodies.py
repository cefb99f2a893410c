"""Kept raw bodies: `etrmflow run --keep-bodies` stores what the vendor sent, by content address,
`etrmflow audit verify --bodies` reads every one back, and `etrmflow audit body` reproduces a
page byte for byte. A body that echoes one of our secrets is kept with it masked."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from etrmflow.testing import EtrmflowProject, SandboxFactory, sandbox_connector

REPO = Path(__file__).resolve().parents[1]
LOG = "target/audit/audit.jsonl"
CANARY = "canary-bodies-3f9a0c17d2"
QUERY_KEY = "{type: api_key, in: query, name: api_key, value: \"{{ secret('SANDBOX_KEY') }}\"}"
HEADER_KEY = "{type: api_key, in: header, name: X-API-Key, value: \"{{ secret('SANDBOX_KEY') }}\"}"
PIPELINE = "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"
LINKS_CONNECTOR = """\
name: vendor
base_url: "{{ env_var('SANDBOX_URL') }}"
auth: %s
streams:
  trades:
    path: /api/v2/trades/links
    params: {page_size: 10}
    records: $.trades
    paginator: {type: next_link, in: body, path: $.links}
"""


def project_reading(project: EtrmflowProject, vendor: Any, connector: str) -> EtrmflowProject:
    project.write({"connectors/vendor.yml": connector, "pipelines/trades.yml": PIPELINE})
    project.copy_from(REPO, "contracts")
    project.env.update(SANDBOX_URL=vendor.base_url, SANDBOX_KEY=CANARY)
    return project


def page_entries(project: EtrmflowProject) -> list[dict[str, Any]]:
    entries = [orjson.loads(line) for line in project.path(LOG).read_bytes().splitlines()]
    return [e for e in entries if e["event"] == "page_fetched"]


def kept_path(project: EtrmflowProject, sha256: str) -> Path:
    return project.path(f"target/bodies/sha256/{sha256[:2]}/{sha256}")


def vendor_bodies(vendor: Any, pages: int, size: int = 10) -> list[bytes]:
    """The cursor pages as the vendor serves them, fetched independently of etrmflow."""
    bodies, url = [], f"{vendor.base_url}/api/v2/trades?limit={size}"
    for _ in range(pages):
        request = urllib.request.Request(url, headers={"X-API-Key": CANARY})
        with urllib.request.urlopen(request) as response:
            body = response.read()
        bodies.append(body)
        cursor = orjson.loads(body)["next_cursor"]
        url = f"{vendor.base_url}/api/v2/trades?limit={size}&cursor={cursor}"
    return bodies


@pytest.fixture
def kept(etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> tuple[EtrmflowProject, Any]:
    """A run of 25 trades (3 pages) that kept its bodies."""
    vendor = sandbox_vendor_factory(trades=25, api_key=CANARY)
    project = project_reading(etrmflow_project, vendor, sandbox_connector(page_size=10, auth=HEADER_KEY))
    result = project.run("run", "--keep-bodies", "pipelines/trades.yml")
    assert result.exit_code == 0, result.output
    return project, vendor


def test_every_page_body_is_kept_byte_for_byte_under_its_hash(kept: tuple[EtrmflowProject, Any]) -> None:
    project, vendor = kept
    expected = vendor_bodies(vendor, 3)

    pages = page_entries(project)

    assert [(p["body_kept"], p["kept_sha256"]) for p in pages] == [
        ("verbatim", hashlib.sha256(body).hexdigest()) for body in expected]
    assert [p["body_sha256"] for p in pages] == [p["kept_sha256"] for p in pages]
    assert [kept_path(project, p["kept_sha256"]).read_bytes() for p in pages] == expected
    assert not os.stat(kept_path(project, pages[0]["kept_sha256"])).st_mode & stat.S_IWUSR  # read-only
    assert [p.name for p in project.files("target/bodies")] == sorted(p["kept_sha256"] for p in pages)
    verified = project.run("audit", "verify", "--bodies")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines()[-1] == "  bodies: 3 kept bodies read back, each matching its hash"


def test_identical_bodies_are_stored_once(kept: tuple[EtrmflowProject, Any]) -> None:
    project, _ = kept
    before = {p: p.stat().st_mtime_ns for p in project.files("target/bodies")}

    again = project.run("run", "--keep-bodies", "pipelines/trades.yml")

    assert again.exit_code == 0, again.output
    assert len(page_entries(project)) == 6
    assert {p: p.stat().st_mtime_ns for p in project.files("target/bodies")} == before


def test_audit_body_prints_and_exports_the_exact_bytes(kept: tuple[EtrmflowProject, Any]) -> None:
    project, vendor = kept
    first = vendor_bodies(vendor, 1)[0]
    digest = hashlib.sha256(first).hexdigest()

    exported = project.run("audit", "body", digest[:10], "--output", "page0.json")
    # The real command in a real process: stdout is a byte stream there.
    printed = subprocess.run([sys.executable, "-m", "etrmflow", "audit", "body", digest], cwd=project.root,
                             capture_output=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})

    assert (exported.exit_code, exported.stdout) == (0, f"Wrote page0.json: {len(first)} bytes, sha256 {digest}\n")
    assert project.path("page0.json").read_bytes() == first
    assert (printed.returncode, printed.stdout, printed.stderr) == (0, first, b"")


def test_audit_body_refuses_an_unknown_short_or_changed_body(kept: tuple[EtrmflowProject, Any]) -> None:
    project, _ = kept
    digest = page_entries(project)[1]["kept_sha256"]
    path = kept_path(project, digest)

    unknown = project.run("audit", "body", "0" * 64)
    short = project.run("audit", "body", digest[:4])
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace(b'"trades"', b'"tradez"'))
    changed = project.run("audit", "body", digest)

    assert unknown.exit_code == 2 and f"no body kept in target/bodies has a hash starting with '{'0' * 64}'" in \
        unknown.stderr
    assert short.exit_code == 2 and "at least the first 8" in short.stderr
    assert (changed.exit_code, changed.stdout) == (1, "")
    assert changed.stderr == (f"Error: the kept body target/bodies/sha256/{digest[:2]}/{digest} does not match "
                              f"its hash: it was changed after it was written\n")


@pytest.mark.parametrize("how", ["changed", "missing"])
def test_verify_bodies_names_a_changed_or_missing_body(how: str, kept: tuple[EtrmflowProject, Any]) -> None:
    project, _ = kept
    digest = page_entries(project)[2]["kept_sha256"]
    path = kept_path(project, digest)
    os.chmod(path, 0o644)
    if how == "changed":
        path.write_bytes(path.read_bytes() + b" ")
    else:
        path.unlink()

    result = project.run("audit", "verify", "--bodies")
    chain_only = project.run("audit", "verify")

    shown = f"target/bodies/sha256/{digest[:2]}/{digest}"
    problem = (f"the kept body {shown} hashes to {hashlib.sha256(path.read_bytes()).hexdigest()}: it was changed "
               f"after it was written" if how == "changed" else f"the kept body {shown} is not there")
    assert (result.exit_code, result.stdout.splitlines()[1:]) == (1, [f"  line 9 (seq 9): body {how}: {problem}"])
    assert chain_only.exit_code == 0  # the chain itself is intact


def test_bodies_are_not_kept_by_default_and_the_project_file_can_turn_them_on(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=15, api_key=CANARY)
    project = project_reading(etrmflow_project, vendor, sandbox_connector(page_size=10, auth=HEADER_KEY))

    plain = project.run("run", "pipelines/trades.yml")
    assert plain.exit_code == 0, plain.output
    assert not project.path("target/bodies").exists()
    project.write({"etrmflow.yml": "name: kept\nkeep_bodies: true\n"})
    configured = project.run("run", "pipelines/trades.yml")
    kept_files = project.files("target/bodies")
    overridden = project.run("run", "--no-keep-bodies", "pipelines/trades.yml")

    assert (configured.exit_code, overridden.exit_code) == (0, 0)
    assert [p["body_kept"] for p in page_entries(project)] == [None, None, "verbatim", "verbatim", None, None]
    assert len(kept_files) == 2 and project.files("target/bodies") == kept_files


def test_a_body_echoing_our_secret_is_kept_masked_and_the_secret_is_nowhere(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    """The sandbox's `links` pages echo the request URL, api_key included, as real vendors' self links do."""
    vendor = sandbox_vendor_factory(trades=25, api_key=CANARY)
    project = project_reading(etrmflow_project, vendor, LINKS_CONNECTOR % QUERY_KEY)

    result = project.run("run", "--keep-bodies", "pipelines/trades.yml")
    pages = page_entries(project)
    first = pages[0]
    exported = project.run("audit", "body", first["body_sha256"], "--output", "page0.json")
    verified = project.run("audit", "verify", "--bodies")

    assert result.exit_code == 0, result.output
    assert [p["body_kept"] for p in pages] == ["redacted"] * 3
    assert all(p["kept_sha256"] != p["body_sha256"] for p in pages)
    masked = project.path("page0.json").read_bytes()
    assert b"api_key=***" in masked and hashlib.sha256(masked).hexdigest() == first["kept_sha256"]
    assert exported.exit_code == 0 and "kept with credentials masked" in exported.stderr
    assert verified.exit_code == 0 and "3 kept bodies read back" in verified.stdout
    assert project.files_containing(CANARY) == []
    assert project.files_containing(b"ACME-T-0000001", "target/bodies") != []  # the records are kept


def test_a_body_that_cannot_be_kept_stops_the_run_before_its_page_is_loaded(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=25, api_key=CANARY)
    project = project_reading(etrmflow_project, vendor, sandbox_connector(page_size=10, auth=HEADER_KEY))
    project.path("target").mkdir(parents=True, exist_ok=True)
    project.path("target/bodies").write_text("in the way")  # as a full disk would, writing fails

    result = project.run("run", "--keep-bodies", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output  # a clear failure, not an internal error
    failed = project.pipeline_result()
    assert (failed["error_type"], failed["counts"]["written"]) == ("AuditError", 0)
    assert failed["error"].startswith(f"cannot keep the response body in {project.path('target/bodies')}: ")
    assert not project.path("target/crash.log").exists()
    assert project.run("audit", "verify").exit_code == 0
