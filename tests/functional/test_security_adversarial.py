"""A hostile vendor and a careless YAML author against the real CLI in a temp project (real HTTP
over loopback with ``scripted_vendor``): secrets stay secret, bad configuration is a located
error (exit 2) before anything is fetched or deleted, and what would compute forever or exhaust
memory stops with a message. Unit-level cases: tests/test_security_adversarial.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
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
    name: {type: string}
    qty: {type: string}
    echo: {type: string}
"""
PIPELINE = """\
name: deals
source: {connector: vendor, stream: deals}
contract: deal
on_invalid: {action: quarantine, max_ratio: 1}
sinks:
  - {type: sqlite, table: deals, mode: upsert}
"""
RETRY_ONCE = "defaults:\n  retry: {max_attempts: 1}\n"

Serve = Callable[[Callable[[ScriptedRequest], Any]], ScriptedVendor]


def connector(*, auth: str = "{type: none}", paginator: str = "{type: single}",
              base_url: str = "{{ env_var('VENDOR_URL') }}") -> str:
    return (f"name: vendor\nbase_url: \"{base_url}\"\nauth: {auth}\n{RETRY_ONCE}"
            f"streams:\n  deals:\n    path: /deals\n    records: $.deals\n    paginator: {paginator}\n")


def make_project(project: EtrmflowProject, vendor: ScriptedVendor | None, *, pipeline: str = PIPELINE,
                 contract: str = CONTRACT, **options: str) -> EtrmflowProject:
    project.write({"contracts/deal.yml": contract, "connectors/vendor.yml": connector(**options),
                   "pipelines/deals.yml": pipeline})
    project.env["VENDOR_URL"] = vendor.url if vendor else "http://127.0.0.1:9"
    return project


# --- secrets -----------------------------------------------------------------------------------------

def test_a_secret_marker_in_a_vendors_cursor_never_gets_the_variables_value(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """The transport resolves ${secret:NAME} as a request leaves: a vendor's cursor spelling one
    got back the value of any environment variable it named. Only the secrets the configuration
    names are resolved now: the marker goes back as text."""
    def answer(request: ScriptedRequest) -> Any:
        if "cursor" in request.query:
            return {"deals": [{"deal_id": "B"}], "next": None}
        return {"deals": [{"deal_id": "A"}], "next": "${secret:DATABASE_PASSWORD}"}
    vendor = scripted_vendor(answer)
    project = make_project(etrmflow_project, vendor, paginator="{type: cursor, cursor: $.next, param: cursor}")
    project.env["DATABASE_PASSWORD"] = "db-passw0rd-never-sent"

    project.run("run", "pipelines/deals.yml")

    assert vendor.requests[1:2] == [] or vendor.requests[1].query == {"cursor": "${secret:DATABASE_PASSWORD}"}
    assert not any("db-passw0rd-never-sent" in json.dumps([request.query, request.headers])
                   for request in vendor.requests)


def test_an_echoed_basic_auth_header_is_in_no_output_file_or_table(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """The header is base64(user:password): masked only as the password, it went into the
    error message, run_results.json, the audit log and (echoed in a record) the table."""
    def answer(request: ScriptedRequest) -> Any:
        echoed = json.dumps(request.headers)
        if request.query.get("page") == "2":
            return Answer(body=f"denied: {echoed}", status=403)
        return {"deals": [{"deal_id": "A"}, {"deal_id": "B", "echo": echoed}], "more": True}
    vendor = scripted_vendor(answer)
    project = make_project(etrmflow_project, vendor, auth="{type: basic, username: ops, password: "
                                                          "\"{{ secret('VENDOR_PASSWORD') }}\"}",
                           paginator="{type: page_number, param: page, has_more: $.more}")
    project.env["VENDOR_PASSWORD"] = "basic-passw0rd-xyz"
    header = base64.b64encode(b"ops:basic-passw0rd-xyz").decode()

    result = project.run("run", "pipelines/deals.yml")

    assert vendor.requests[0].headers["Authorization"] == f"Basic {header}"
    assert result.exit_code == 1, result.output
    assert "403" in result.output
    assert header not in result.output
    assert project.files_containing(header) == []
    assert project.files_containing("basic-passw0rd-xyz") == []
    assert project.query("SELECT deal_id FROM deals") == [("A",)]
    [letter] = project.dead_letters("deals")
    assert [v["keyword"] for v in letter["violations"]] == ["x-etrmflow-secret"]


def test_a_password_in_base_url_is_refused_before_it_reaches_the_plan(etrmflow_project: EtrmflowProject) -> None:
    project = make_project(etrmflow_project, None, base_url="https://ops:{{ env_var('URL_PASSWORD') }}@api.example")
    project.env["URL_PASSWORD"] = "url-pa55word-qq"

    for command in ("validate", "compile"):
        result = project.run(command, "pipelines/deals.yml")
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(
            "connectors/vendor.yml:2:11: base_url: the password in base_url is written in the file (or rendered by "
            "env_var() when the files load), so it would be copied into target/plan.json")
    assert "url-pa55word-qq" not in result.output
    assert project.files_containing("url-pa55word-qq") == []


def test_a_base_url_password_given_as_a_secret_is_sent_and_masked(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "A"}]})
    address = vendor.url.removeprefix("http://")
    project = make_project(etrmflow_project, vendor, base_url=f"http://ops:{{{{ secret('URL_PASSWORD') }}}}@{address}")
    project.env["URL_PASSWORD"] = "url-pa55word-qq"

    results = [project.run("compile", "pipelines/deals.yml"), project.run("run", "pipelines/deals.yml")]

    assert [result.exit_code for result in results] == [0, 0], results[-1].output
    assert vendor.requests[0].headers["Authorization"] == "Basic " + base64.b64encode(b"ops:url-pa55word-qq").decode()
    assert not any("url-pa55word-qq" in result.output for result in results)
    assert project.files_containing("url-pa55word-qq") == []


# --- outputs that would delete the project -------------------------------------------------------------

@pytest.mark.parametrize(("path", "what"), [
    (".", "the project folder"),
    ("target", "the target folder (checkpoints, audit log, dead letters)"),
    ("pipelines", "the project's own pipelines"),
])
def test_a_sink_replacing_the_project_or_its_target_folder_is_refused(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve, path: str, what: str) -> None:
    """A Parquet sink in replace mode (its default) swaps its whole folder: with ``path: .`` a
    run deleted connectors, contracts, pipelines and etrmflow.yml."""
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "A"}]})
    pipeline = PIPELINE.replace("{type: sqlite, table: deals, mode: upsert}", f"{{type: parquet, path: \"{path}\"}}")
    project = make_project(etrmflow_project, vendor, pipeline=pipeline)
    before = project.files()

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 2, result.output
    assert f"parquet sink replaces {path} as a whole, and that is {what}: the run would delete it" in result.stderr
    assert vendor.requests == []
    assert set(before) <= set(project.files())


# --- configuration that ran forever or crashed ---------------------------------------------------------

def test_a_rule_over_a_number_of_a_billion_digits_is_not_applicable_and_the_run_finishes(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """round(decimal('1e999999999')) computed an integer of a billion digits: the run hung. In a
    child process, so that a regression fails instead of hanging the tests."""
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "A", "qty": "1e999999999"}]})
    contract = CONTRACT + "rules:\n  - {name: positive, check: round(decimal(qty)) > 0}\n"
    project = make_project(etrmflow_project, vendor, contract=contract)
    environment = {**os.environ, **{k: v for k, v in project.env.items() if v is not None}}

    try:
        done = subprocess.run([sys.executable, "-m", "etrmflow", "run", "pipelines/deals.yml"], cwd=project.root,
                              env=environment, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the run was still going after 120 s")

    assert done.returncode == 0, done.stdout + done.stderr
    assert project.query("SELECT deal_id FROM deals") == [("A",)]  # a rule it cannot judge is skipped


def test_a_derive_repeating_text_fails_the_run_with_the_records_message(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """Over records ``name * n`` is refused; over columns pandas repeated each string (with a
    billion, gigabytes per row)."""
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "A", "name": "abc"}]})
    pipeline = PIPELINE.replace("sinks:", "transforms:\n  - {type: derive, columns: {banner: name * 1000}}\nsinks:")
    project = make_project(etrmflow_project, vendor, pipeline=pipeline)

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert "transforms[0] (derive) failed on batch" in result.stdout
    assert "NotApplicable: name * 1000: '*' needs numbers" in result.stdout


@pytest.mark.parametrize(("added", "problem"), [
    ("description: " + "[" * 3000 + "]" * 3000 + "\n",
     "the file is nested more than 100 levels deep"),  # where the YAML reader's stack ran out: no fixed column
    ("tags: [{{ '%999999999d' % 1 }}]\n".replace("{{", "\"{{").replace("}}]", "}}\"]"),
     "pipelines/deals.yml:7:8: tags[0]: template not allowed: a format width or precision above 100000 is not allowed"),
    ("description: \"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\"\n",
     ("pipelines/deals.yml:7:14: description: template syntax error: {% for %} is not available in configuration "
      "templates (no loops or macros)")),
], ids=["yaml_nesting", "format_width", "nested_loops"])
def test_configuration_that_exhausted_the_stack_or_memory_is_a_located_error(
        etrmflow_project: EtrmflowProject, added: str, problem: str) -> None:
    project = make_project(etrmflow_project, None, pipeline=PIPELINE + added)

    result = project.run("validate", "pipelines/deals.yml")

    assert result.exit_code == 2, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("pipelines/deals.yml:7:") and problem in first


def test_max_ratio_nan_is_refused_instead_of_never_failing_a_run(etrmflow_project: EtrmflowProject) -> None:
    """NaN compares false with everything: the threshold was never breached, and plan.json held
    the invalid JSON token NaN."""
    project = make_project(etrmflow_project, None, pipeline=PIPELINE.replace("max_ratio: 1", "max_ratio: .nan"))

    result = project.run("compile", "pipelines/deals.yml")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("pipelines/deals.yml:4:45: on_invalid.max_ratio: .nan is not a finite number")
    assert not project.path("target/plan.json").exists()


def test_a_python_step_module_importing_a_project_file_named_like_the_standard_library_is_refused(
        etrmflow_project: EtrmflowProject) -> None:
    """With the project folder first on the import path, ``import mailbox`` in the step's module
    took the project's mailbox.py, which then stayed ``mailbox`` for the whole process."""
    pipeline = PIPELINE.replace("sinks:", "transforms:\n  - {type: python, function: \"steps:tag\"}\nsinks:")
    project = make_project(etrmflow_project, None, pipeline=pipeline)
    project.write({"steps.py": "import mailbox\n\ndef tag(frame):\n    return frame\n",
                   "mailbox.py": "WHO = 'the project'\n"})

    result = project.run("validate", "pipelines/deals.yml")

    assert result.exit_code == 2, result.output
    assert "the project's module 'mailbox'" in result.stderr
    assert "would replace mailbox from the standard library for the whole run; rename the project's mailbox" in (
        result.stderr)
    assert "mailbox" not in sys.modules or not hasattr(sys.modules["mailbox"], "WHO")

def test_a_template_in_a_vendors_cursor_is_sent_as_text_never_rendered(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """Request-time rendering went over the whole request, the vendor's cursor included: a cursor
    ``{{ env_var('DATABASE_PASSWORD') }}`` came back holding the variable's value."""
    def answer(request: ScriptedRequest) -> Any:
        if "cursor" in request.query:
            return {"deals": [{"deal_id": "B"}], "next": None}
        return {"deals": [{"deal_id": "A"}], "next": "{{ env_var('DATABASE_PASSWORD') }}"}
    vendor = scripted_vendor(answer)
    project = make_project(etrmflow_project, vendor, paginator="{type: cursor, cursor: $.next, param: cursor}")
    project.env["DATABASE_PASSWORD"] = "db-passw0rd-never-sent"

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 0, result.output
    assert [request.query for request in vendor.requests] == [{}, {"cursor": "{{ env_var('DATABASE_PASSWORD') }}"}]


def test_a_next_link_to_another_host_is_not_followed_with_the_credentials(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    elsewhere = scripted_vendor(lambda request: {"deals": []})
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "A"}], "next": elsewhere.url + "/collect"})
    project = make_project(etrmflow_project, vendor, paginator="{type: next_link, path: $.next}",
                           auth="{type: bearer, token: \"{{ secret('VENDOR_TOKEN') }}\"}")
    project.env["VENDOR_TOKEN"] = "bearer-t0ken-abcdef"

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert f"next link {elsewhere.url}/collect leads away from" in result.stdout
    assert elsewhere.requests == []


def test_a_secret_marker_in_a_vendors_cursor_fails_the_walk(
        etrmflow_project: EtrmflowProject, scripted_vendor: Serve) -> None:
    """Declared secrets are resolved wherever they are in a request: the vendor must not pick one."""
    vendor = scripted_vendor(lambda request: {"deals": [{"deal_id": "A"}], "next": "${secret:VENDOR_TOKEN}"})
    project = make_project(etrmflow_project, vendor, paginator="{type: cursor, cursor: $.next, param: cursor}",
                           auth="{type: bearer, token: \"{{ secret('VENDOR_TOKEN') }}\"}")
    project.env["VENDOR_TOKEN"] = "bearer-t0ken-abcdef"

    result = project.run("run", "pipelines/deals.yml")

    assert result.exit_code == 1, result.output
    assert "holds a secret marker" in result.stdout
    assert len(vendor.requests) == 1
