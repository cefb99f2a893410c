"""Write-back: settlements fetched, checked and POSTed as instructions by the ``http`` sink, each
booked exactly once whatever happens to the requests; the sandbox vendor keeps every booking."""

from __future__ import annotations

import json
import re
import urllib.request
from decimal import Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from etrmflow.cli.schema_command import packaged_schema
from etrmflow.sandbox import ThreadedSandbox, settlement
from etrmflow.testing import EtrmflowProject, SandboxFactory, expected_settlements

from . import FAST_RETRY, REPO

PATH = "/api/v2/settlement-instructions"
SINK = f"http vendor POST {PATH}"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
OAUTH = ("{type: oauth2_client_credentials, token_url: /oauth2/token, client_id: demo, "
         "client_secret: \"{{ secret('VENDOR_SECRET') }}\"}")
API_KEY = "{type: api_key, in: header, name: X-API-Key, value: \"{{ secret('VENDOR_SECRET') }}\"}"
COLUMNS = ["settlement_id", "trade_id", "amount", "currency", "settlement_date"]
PIPELINE = """\
name: instructions
source: {{connector: vendor, stream: settlements}}
contract: settlement_money
sinks:
  - type: http
    connector: {connector}
    path: /api/v2/settlement-instructions
    batch_size: 10
    wrap: instructions
    columns: [settlement_id, trade_id, amount, currency, settlement_date]
{extra}"""


def connector(name: str = "vendor", auth: str = OAUTH) -> str:
    return (f"name: {name}\n"
            "base_url: \"{{ env_var('SANDBOX_URL') }}\"\n"
            f"auth: {auth}\n"
            f"{FAST_RETRY}"
            "streams:\n"
            "  settlements:\n"
            "    path: /api/v2/settlements\n"
            "    params: {page_size: 25}\n"
            "    records: $.results\n"
            "    paginator: {type: page_number, param: page, total_pages: $.total_pages}\n")


def money_contract() -> str:
    """The example settlement contract (its amount is exact money in cents), named apart."""
    text = (REPO / "contracts" / "settlement.yml").read_text(encoding="utf-8")
    assert "amount: {type: number, x-etrmflow-decimal: {precision: 18, scale: 2}}" in text
    return text.replace("name: settlement\n", "name: settlement_money\n")


def writeback_project(project: EtrmflowProject, vendor: ThreadedSandbox, *, auth: str = OAUTH,
                      sink_connector: str = "vendor", extra: str = "") -> EtrmflowProject:
    project.write({"connectors/vendor.yml": connector(auth=auth),
                   "contracts/settlement_money.yml": money_contract(),
                   "pipelines/instructions.yml": PIPELINE.format(connector=sink_connector, extra=extra)})
    project.env.update(SANDBOX_URL=vendor.base_url, VENDOR_SECRET="demo-secret")
    return project


def bookings(vendor: ThreadedSandbox) -> dict[str, list[dict[str, Any]]]:
    """Every booking of every instruction, numbers exactly as the vendor received them."""
    with NO_PROXY.open(vendor.base_url + "/_sandbox/instructions", timeout=10) as response:
        return json.loads(response.read(), parse_float=Decimal)["instructions"]


def keys_in_order(vendor: ThreadedSandbox) -> list[str]:
    """The idempotency keys of the requests that booked something, in the order they arrived."""
    return list(dict.fromkeys(b["idempotency_key"] for booked in bookings(vendor).values() for b in booked))


def assert_every_valid_settlement_booked_once(vendor: ThreadedSandbox) -> int:
    valid = expected_settlements(vendor.config).valid
    booked = bookings(vendor)
    assert sorted(booked) == sorted(valid)
    assert {sid: len(times) for sid, times in booked.items() if len(times) != 1} == {}
    stats = vendor.stats()
    assert stats["instructions_accepted"] == stats["instructions_distinct"] == len(valid)
    return len(valid)


def post_requests(vendor: ThreadedSandbox) -> int:
    return vendor.stats()["requests"].get(PATH, 0)


# --- posted once, whatever happens -------------------------------------------------------------

def test_settlements_are_posted_once_and_a_rerun_books_nothing_new(etrmflow_project: EtrmflowProject,
                                                                   sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = writeback_project(etrmflow_project, vendor)

    first = project.run("run", "pipelines/instructions.yml")

    assert first.exit_code == 0, first.output
    valid = assert_every_valid_settlement_booked_once(vendor)
    keys = keys_in_order(vendor)
    assert post_requests(vendor) == len(keys) and all(re.fullmatch(r"[0-9a-f]{64}", key) for key in keys)
    result = project.pipeline_result()
    assert (result["sinks"], result["counts"]["written"]) == ({SINK: valid}, valid)
    assert f"INFO    {SINK}: {valid} rows in {len(keys)} requests; 0 of those requests replayed" in first.stderr
    audit = [json.loads(line) for line in project.path("target/audit/audit.jsonl").read_text().splitlines()]
    posted = [entry for entry in audit if entry["event"] == "batch_posted"]
    assert ({e["sink"] for e in posted}, sum(e["rows"] for e in posted), len(posted)) == ({SINK}, valid, 5)
    requests = [r for e in posted for r in e["requests"]]
    assert [r["idempotency_key"] for r in requests] == keys  # the audit names what the vendor booked
    assert {(r["status"], r["replayed"]) for r in requests} == {(201, False)}
    assert [sum(r["rows"] for r in e["requests"]) for e in posted] == [e["rows"] for e in posted]
    plan = project.plan()
    assert list(Draft202012Validator(packaged_schema("plan")).iter_errors(plan)) == []
    assert plan["pipelines"][0]["sink_connectors"]["vendor"]["connector"]["auth"]["options"]["client_secret"] == (
        "${secret:VENDOR_SECRET}")

    rerun = project.run("run", "pipelines/instructions.yml")

    assert rerun.exit_code == 0, rerun.output
    assert_every_valid_settlement_booked_once(vendor)
    assert vendor.stats()["instructions_replayed"] == valid
    assert post_requests(vendor) == 2 * len(keys)
    assert f"{len(keys)} of those requests replayed by the vendor (booked before)" in rerun.stderr


def test_money_is_sent_with_every_digit_and_only_the_chosen_columns(etrmflow_project: EtrmflowProject,
                                                                   sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = writeback_project(etrmflow_project, vendor)

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 0, result.output
    booked = {sid: times[0]["instruction"] for sid, times in bookings(vendor).items()}
    vendor_amounts = {s["settlement_id"]: s.get("amount") for s in (settlement(i, 7) for i in range(120))}
    sent = {sid: str(instruction["amount"]) for sid, instruction in booked.items()}
    assert sent == {sid: f"{Decimal(repr(vendor_amounts[sid])):.2f}" for sid in booked}
    # The vendor's JSON says e.g. 1234.5; a float would have sent that, the declared cents say 1234.50.
    assert any(len(repr(vendor_amounts[sid]).split(".")[1]) == 1 for sid in booked)
    assert {tuple(sorted(instruction)) for instruction in booked.values()} == {tuple(sorted(COLUMNS))}


def test_lost_answers_are_retried_with_the_same_key_and_booked_once(etrmflow_project: EtrmflowProject,
                                                                    sandbox_vendor_factory: SandboxFactory) -> None:
    # The 2nd POST is booked and answered 503; the 5th is booked and its connection dropped.
    vendor = sandbox_vendor_factory(faults=[f"accept-503:at=2,path={PATH}", f"accept-drop:at=5,path={PATH}"])
    project = writeback_project(etrmflow_project, vendor)

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 0, result.output
    assert_every_valid_settlement_booked_once(vendor)
    keys = keys_in_order(vendor)
    lost = {keys[1], keys[4]}
    stats = vendor.stats()
    assert stats["faults_injected"] == {"accept-503": 1, "accept-drop": 1}
    assert stats["instructions_replayed"] == sum(
        b["idempotency_key"] in lost for booked in bookings(vendor).values() for b in booked)
    assert post_requests(vendor) == len(keys) + 2
    retries = re.findall(r"WARNING retrying POST http://127\.0\.0\.1:\d+/api/v2/settlement-instructions "
                         r"\[request [0-9a-f]+\] \(attempt 2 of 4\) in 0\.01s after: (.*)\n", result.stderr)
    assert [re.sub(r"127\.0\.0\.1:\d+", "HOST", reason) for reason in retries] == [
        f"POST http://HOST{PATH} answered 503",
        f"POST http://HOST{PATH} failed: connection error: Server disconnected"]


def test_a_run_that_failed_midway_resumes_without_booking_anything_twice(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    # POSTs 5 to 8 answer 503: the 5th outlasts its 4 attempts, half-way through page 2's rows.
    vendor = sandbox_vendor_factory(faults=[f"503:at=5,burst=4,path={PATH}"])
    project = writeback_project(etrmflow_project, vendor)

    failed = project.run("run", "pipelines/instructions.yml")

    assert failed.exit_code == 1, failed.output
    result = project.pipeline_result()
    assert result["error_type"] == "SinkError"
    assert re.fullmatch(rf"{SINK}: rows 11-20 of batch [0-9a-f]{{32}} \(Idempotency-Key [0-9a-f]{{64}}\): gave up "
                        rf"after 4 attempts: POST http://127\.0\.0\.1:\d+{PATH} answered 503", result["error"])
    booked_before = vendor.stats()["instructions_accepted"]

    resumed = project.run("run", "--resume", "pipelines/instructions.yml")

    assert resumed.exit_code == 0, resumed.output
    assert_every_valid_settlement_booked_once(vendor)
    # Page 1 and the first 10 rows of page 2 were booked before the failure. The resumed run
    # starts again at page 2 (the last page committed is page 1) and sends those 10 again:
    # same rows, same key, replayed instead of booked.
    valid = expected_settlements(vendor.config).valid
    page_1 = len(valid & {settlement(i, 7)["settlement_id"] for i in range(25)})
    assert (booked_before, vendor.stats()["instructions_replayed"]) == (page_1 + 10, 10)


# --- refusals ----------------------------------------------------------------------------------

def test_a_key_reused_with_another_body_fails_the_run_with_the_vendors_message(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = writeback_project(etrmflow_project, vendor)
    assert project.run("run", "pipelines/instructions.yml").exit_code == 0
    first_key = keys_in_order(vendor)[0]
    vendor.reset()  # the vendor forgets; someone else books other content under that key
    request = urllib.request.Request(vendor.base_url + PATH, data=b'[{"settlement_id": "OTHER-1"}]', method="POST",
                                     headers={"X-API-Key": "sandbox-key", "Idempotency-Key": first_key})
    with NO_PROXY.open(request, timeout=10) as response:
        assert response.status == 201

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 1, result.output
    failed = project.pipeline_result()
    assert (failed["status"], failed["error_type"], failed["exit_code"]) == ("failed", "SinkError", 1)
    assert re.fullmatch(
        rf"{SINK}: rows 1-10 of batch [0-9a-f]{{32}} \(Idempotency-Key {first_key}\): POST http://127\.0\.0\.1:\d+"
        rf'{PATH} answered 422: {{"error":"idempotency_key_reused","message":"this Idempotency-Key was used '
        r'with a different body"}', failed["error"]), failed["error"]
    stats = vendor.stats()
    assert (stats["instructions_accepted"], stats["idempotency_conflicts"], post_requests(vendor)) == (1, 1, 2)


def test_a_refusal_the_policy_does_not_retry_fails_at_once(etrmflow_project: EtrmflowProject,
                                                           sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(require_idempotency_key=True)
    project = writeback_project(etrmflow_project, vendor, extra="    idempotency_header: X-Dedup-Key\n")

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 1, result.output
    assert project.pipeline_result()["error"].endswith(
        f'{PATH} answered 400: {{"error":"idempotency_key_required",'
        '"message":"send an Idempotency-Key header with each POST"}')
    assert (post_requests(vendor), vendor.stats()["instructions_accepted"]) == (1, 0)


# --- secrets and configuration -----------------------------------------------------------------

CANARY = "canary-4d2b7e91c03f4a6f9e5d"


@pytest.mark.parametrize(("auth", "setting"), [(OAUTH, "client_secret"), (API_KEY, "api_key")],
                         ids=["oauth2_client_credentials", "api_key_header"])
def test_the_secret_is_in_no_file_and_no_output(auth: str, setting: str, etrmflow_project: EtrmflowProject,
                                                sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(faults=[f"accept-503:at=2,path={PATH}", "expire-tokens:at=9"],
                                    **{setting: CANARY})
    project = writeback_project(etrmflow_project, vendor, auth=auth)
    project.env["VENDOR_SECRET"] = CANARY

    results = [project.run("compile", "pipelines/instructions.yml"),
               project.run("run", "pipelines/instructions.yml"),
               project.run("--log-level", "debug", "--log-format", "json", "run", "pipelines/instructions.yml"),
               project.run("--log-level", "debug", "run", "pipelines/instructions.yml")]

    assert [r.exit_code for r in results] == [0, 0, 0, 0], results[-1].output
    assert_every_valid_settlement_booked_once(vendor)
    assert "answered 200 after 1 attempt(s) (replayed: booked before)" in results[-1].stderr  # debug lines
    assert project.files_containing(CANARY) == []
    for result in results:
        assert CANARY not in result.stdout + result.stderr, result.output


def test_a_refused_sink_secret_is_not_shown_either(etrmflow_project: EtrmflowProject,
                                                   sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()  # expects its demo client secret, not the canary
    project = writeback_project(etrmflow_project, vendor, auth=API_KEY, sink_connector="backoffice")
    project.write({"connectors/backoffice.yml": connector("backoffice", OAUTH.replace("VENDOR_SECRET", "BO_SECRET"))})
    project.env.update(VENDOR_SECRET="sandbox-key", BO_SECRET=CANARY)

    results = [project.run("run", "pipelines/instructions.yml"),
               project.run("--log-level", "debug", "--log-format", "json", "run", "pipelines/instructions.yml")]

    assert [r.exit_code for r in results] == [2, 2], results[-1].output  # refused credentials: a config problem
    failed = project.pipeline_result()
    assert (failed["error_type"], vendor.stats()["instructions_accepted"]) == ("CredentialsRejected", 0)
    assert failed["error"].startswith("http backoffice POST /api/v2/settlement-instructions: rows 1-10 of batch ")
    assert project.files_containing(CANARY) == []
    for result in results:
        assert CANARY not in result.stdout + result.stderr, result.output


def test_a_missing_secret_of_the_sink_connector_stops_the_run_before_any_request(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = writeback_project(etrmflow_project, vendor, sink_connector="backoffice")
    project.write({"connectors/backoffice.yml": connector("backoffice", OAUTH.replace("VENDOR_SECRET", "BO_SECRET"))})

    result = project.run("run", "pipelines/instructions.yml", env={"BO_SECRET": None})

    assert result.exit_code == 2, result.output
    assert "connectors/backoffice.yml:3:99: auth.client_secret: secret 'BO_SECRET' is not set" in result.stderr
    assert vendor.stats()["requests"] == {}


def test_a_sink_connector_that_cannot_be_opened_fails_the_run_with_a_message(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = writeback_project(etrmflow_project, vendor, auth=API_KEY, sink_connector="backoffice")
    backoffice = connector("backoffice", API_KEY).replace("auth:", "tls: {ca_bundle: certs/missing.pem}\nauth:")
    project.write({"connectors/backoffice.yml": backoffice})
    project.env["VENDOR_SECRET"] = "sandbox-key"

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 1, result.output  # not an internal error with a crash log
    failed = project.pipeline_result()
    assert failed["error_type"] == "SinkError"
    assert failed["error"].startswith(
        f"{SINK.replace('vendor', 'backoffice')}: cannot open connector 'backoffice': connector backoffice "
        f"(connectors/backoffice.yml): tls.ca_bundle 'certs/missing.pem' cannot be loaded ([Errno 2] No such file")
    assert not project.path("target/crash.log").exists()
    assert vendor.stats()["requests"] == {}


def test_validate_reports_an_unknown_sink_connector_at_its_line(etrmflow_project: EtrmflowProject,
                                                                sandbox_vendor_factory: SandboxFactory) -> None:
    project = writeback_project(etrmflow_project, sandbox_vendor_factory(), sink_connector="vendr")

    result = project.run("validate", "pipelines/instructions.yml")

    assert result.exit_code == 2, result.output
    located = ("pipelines/instructions.yml:6:16: sinks[0].connector: no connector named 'vendr' in connectors/ "
               "(did you mean 'vendor'?)")
    assert result.stderr.splitlines() == [located, "1 problem found; nothing was fetched."]


def test_a_connector_used_only_for_writing_back_needs_no_streams(etrmflow_project: EtrmflowProject,
                                                                 sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory()
    project = writeback_project(etrmflow_project, vendor, sink_connector="back_office")
    project.write({"connectors/back_office.yml": (
        "name: back_office\n"
        "base_url: \"{{ env_var('SANDBOX_URL') }}\"\n"
        f"auth: {API_KEY.replace('VENDOR_SECRET', 'BO_KEY')}\n"
        f"{FAST_RETRY}")})
    project.env["BO_KEY"] = "sandbox-key"

    result = project.run("run", "pipelines/instructions.yml")
    debug = project.run("debug", "back_office")

    assert result.exit_code == 0, result.output
    assert_every_valid_settlement_booked_once(vendor)
    assert debug.exit_code == 2
    assert "declares no streams to fetch" in debug.stderr
