"""A vendor that sends the same page again, and ``no_data`` answers in the middle of a walk.

A page-number or offset walk against a vendor that ignores the paging parameter (a wrong
parameter name is enough) gets the first page again and again: without a guard the run reloads
it until ``max_pages`` (100,000 requests), or, with a page count or a total, ends "successfully"
with one page loaded many times and the others never. These tests run the real CLI over loopback
against the sandbox vendor (which ignores query parameters it does not know, as real vendors
do) and against a tiny loopback vendor where the sandbox cannot misbehave that way.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from etrmflow.engine.resume import REMEMBERED_PAGES
from etrmflow.engine.runner import PAGES_IN_FLIGHT
from etrmflow.sandbox import SandboxConfig
from etrmflow.sandbox.data import trade, trade_id
from etrmflow.testing import (
    Answer,
    EtrmflowProject,
    SandboxFactory,
    ScriptedRequest,
    ScriptedVendor,
    expected_trades,
)

from . import FAST_RETRY, PIPELINE, REPO, TRADES, connector_yaml, sandbox_project

KEY = "{type: api_key, in: header, name: X-API-Key, value: sandbox-key}"
APPEND = PIPELINE + "sinks:\n  - {type: sqlite, table: trades, mode: append}\n"
"""Append mode: a page written twice under two page numbers would be two copies of its rows."""
NO_DATA = FAST_RETRY + "response_rules:\n  - {status: 404, action: no_data, message: no trades}\n"

# The sandbox reads its page from `page` and its offset from `offset`: these streams send them
# under another name, so every request gets the first page. (name: path, params, records,
# paginator, the parameter the paginator sends)
IGNORED = {
    "page_number_has_more": ("/api/v2/trades/pages", "{page_size: 10}", "$.data",
                             "{type: page_number, param: pg, has_more: $.next_page}", "pg"),
    "page_number_total_pages": ("/api/v2/trades/pages", "{page_size: 10}", "$.data",
                                "{type: page_number, param: pg, total_pages: $.total_pages}", "pg"),
    "page_number_empty_page": ("/api/v2/trades/pages", "{page_size: 10}", "$.data",
                               "{type: page_number, param: pg}", "pg"),
    "offset_total": ("/api/v2/trades/offset", "{}", "$.items",
                     "{type: offset, offset_param: skip, limit: 10, total: $.total}", "skip"),
    "offset_empty_page": ("/api/v2/trades/offset", "{}", "$.items",
                          "{type: offset, offset_param: skip, limit: 10}", "skip"),
}


def _ignoring(project: EtrmflowProject, vendor: Any, name: str, pipeline: str = PIPELINE) -> EtrmflowProject:
    path, params, records, paginator, _ = IGNORED[name]
    sandbox_project(project, vendor, auth=KEY, path=path, params=params, records=records, paginator=paginator)
    project.write({"pipelines/trades.yml": pipeline})
    return project


def _sandbox_page(vendor: Any, path: str) -> bytes:
    request = urllib.request.Request(vendor.base_url + path, headers={"X-API-Key": "sandbox-key"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
        return response.read()


def _first_trades(count: int) -> list[tuple[str]]:
    return sorted((trade_id(i),) for i in range(count))


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_a_vendor_that_ignores_the_page_parameter_fails_the_run_at_the_repeated_page(
        name: str, etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = _ignoring(etrmflow_project, vendor, name)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    outcome = project.pipeline_result()
    assert outcome["status"] == "failed" and outcome["error_type"] == "PaginationError"
    error = outcome["error"]
    parameter = IGNORED[name][4]
    assert error.startswith("stream vendor.trades: page 2 (GET http://127.0.0.1:"), error
    assert f"{parameter}=" in error and "is byte for byte the same as page 1" in error
    assert f"in the query parameter '{parameter}' (its " in error, error
    assert error.endswith("The repeated page was not written")
    # Page 1 is written once; the repeat is refused before anything of it is kept.
    assert outcome["counts"]["pages"] == 1 and outcome["counts"]["fetched"] == 10
    assert project.query("SELECT trade_id FROM trades") == _first_trades(10)
    assert outcome["resumable"] is not False and outcome["missing"].startswith("pages after page 1 ")
    # It stops at once: pages fetched ahead of the refused one, no walk to max_pages.
    assert vendor.stats()["data_requests"] <= 2 + PAGES_IN_FLIGHT + 1
    assert "byte for byte the same as page 1" in result.stderr


def test_the_repeat_is_refused_with_an_append_sink_too(etrmflow_project: EtrmflowProject,
                                                       sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = _ignoring(etrmflow_project, vendor, "page_number_total_pages", APPEND)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    assert project.query("SELECT trade_id FROM trades") == _first_trades(10)  # not 7 copies of page 1


# --- the guard across --resume -----------------------------------------------------------------

def test_a_resumed_run_remembers_the_page_before_the_resume_point(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    """Page 2 fails for good, so the run stops with page 1 written. Its repeat comes only after
    the resume: the resumed run must refuse it at once, not write it as page 2 (an append sink
    would then hold page 1 twice) and notice only at page 3."""
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=2,burst=4"])  # FAST_RETRY: 4 attempts
    project = _ignoring(etrmflow_project, vendor, "page_number_has_more", APPEND)
    first = project.run("run", "pipelines/trades.yml")
    assert first.exit_code == 1, first.output
    assert project.pipeline_result()["error_type"] == "RetriesExhausted"
    state = json.loads(project.path("target/state/trades.json").read_text())
    [(index, sha256)] = state["recent_pages"]
    assert index == 0 and sha256 == hashlib.sha256(_sandbox_page(vendor, "/api/v2/trades/pages?page_size=10")).hexdigest()
    vendor.reset()
    vendor.set_faults([])

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 1, resumed.output
    outcome = project.pipeline_result()
    assert outcome["error_type"] == "PaginationError" and "page 2 " in outcome["error"]
    assert "is byte for byte the same as page 1" in outcome["error"]
    assert outcome["resumed_from_page"] == 1 and outcome["counts"]["pages"] == 0
    assert project.query("SELECT trade_id FROM trades") == _first_trades(10)


def test_a_checkpoint_remembers_only_the_latest_pages_of_the_walk(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    failing = REMEMBERED_PAGES + 8
    vendor = sandbox_vendor_factory(trades=TRADES, faults=[f"503:at={failing},burst=4"])
    project = sandbox_project(etrmflow_project, vendor, auth=KEY, path="/api/v2/trades/pages",
                              params="{page_size: 1}", records="$.data",
                              paginator="{type: page_number, has_more: $.next_page}")

    assert project.run("run", "pipelines/trades.yml").exit_code == 1

    state = json.loads(project.path("target/state/trades.json").read_text())
    assert state["pages_done"] == failing - 1
    assert [index for index, _ in state["recent_pages"]] == list(range(failing - 1 - REMEMBERED_PAGES, failing - 1))
    vendor.reset()
    vendor.set_faults([])
    assert project.run("run", "--resume", "pipelines/trades.yml").exit_code == 0
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")


# --- a tiny vendor: 404 past the last page, announced counts, a looping cursor -----------------

SIZE = 2


class TinyVendor:
    """Six trades in pages of two. A page past the data answers ``404 {"error": "no_trades"}``.
    ``announced`` overrides the page count (``total_pages``) and the record count (``total``)
    the vendor reports; ``loop_to`` makes the last cursor page point back to that page."""

    def __init__(self) -> None:
        self.trades = 6
        self.announced: int | None = None
        self.loop_to: str | None = None
        self.server = ScriptedVendor(self.answer)
        self.url = self.server.url

    @property
    def requests(self) -> int:
        """How many requests it was sent."""
        return len(self.server.requests)

    def close(self) -> None:
        self.server.close()

    def answer(self, request: ScriptedRequest) -> Any:
        path, query = request.path, request.query
        if path == "/tariffs":  # a fixed tariff: the same hours every day, the day in the envelope
            day = int(query["page"])
            return {"day": f"2025-01-{day:02d}", "hours": [{"hour": h, "price": 12.5} for h in range(3)],
                    "next_page": day < 3}
        start = (int(query["offset"]) if path == "/offset"
                 else (int(query.get("page", query.get("cursor", "1"))) - 1) * SIZE)
        records = [trade(i, 7) for i in range(start, min(start + SIZE, self.trades))]
        if not records:
            return Answer({"error": "no_trades"}, status=404)
        page = start // SIZE + 1
        if path == "/offset":
            return {"items": records, "total": self.announced or self.trades}
        if path == "/cursor":
            last = page * SIZE >= self.trades
            following = self.loop_to if last and self.loop_to else str(page + 1)  # a cursor after a full page
            return {"trades": records, "next_cursor": following}
        pages = self.announced or -(-self.trades // SIZE)
        return {"data": records, "total_pages": pages, "next_page": len(records) == SIZE}


@pytest.fixture
def tiny_vendor() -> Iterator[TinyVendor]:
    vendor = TinyVendor()
    yield vendor
    vendor.close()


def _tiny(project: EtrmflowProject, vendor: TinyVendor, path: str, records: str, paginator: str,
          pipeline: str = PIPELINE) -> EtrmflowProject:
    project.write({"pipelines/trades.yml": pipeline, "connectors/vendor.yml": connector_yaml(
        path=path, records=records, paginator=paginator, params=f"{{page_size: {SIZE}}}", policy=NO_DATA)})
    project.copy_from(REPO, "contracts")
    project.env["SANDBOX_URL"] = vendor.url
    return project


@pytest.mark.parametrize("path,records,paginator", [
    ("/pages", "$.data", "{type: page_number}"),
    ("/pages", "$.data", "{type: page_number, has_more: $.next_page}"),
    ("/offset", "$.items", f"{{type: offset, limit: {SIZE}}}"),
    ("/cursor", "$.trades", "{type: cursor, cursor: $.next_cursor}"),
], ids=["page_number_empty_page", "page_number_has_more", "offset_empty_page", "cursor"])
def test_a_no_data_answer_after_a_full_last_page_is_the_end_of_the_walk(
        path: str, records: str, paginator: str, tiny_vendor: TinyVendor,
        etrmflow_project: EtrmflowProject) -> None:
    """The last page is full, so the walk asks for one more; the vendor answers 404, which a
    no_data rule declares an empty result: the walk ends there and the run succeeds."""
    project = _tiny(etrmflow_project, tiny_vendor, path, records, paginator)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    counts = project.pipeline_result()["counts"]
    assert (counts["pages"], counts["fetched"], counts["written"]) == (4, 6, 6)  # the 4th page is empty
    assert tiny_vendor.requests == 4
    project.assert_loaded_exactly(expected_trades(SandboxConfig(trades=6)), table="trades", pipeline="trades")


@pytest.mark.parametrize("path,records,paginator,announced,refusal", [
    ("/pages", "$.data", "{type: page_number, total_pages: $.total_pages}", 5,
     "page 4 answered with a no_data response rule but the vendor reported 5 pages"),
    ("/offset", "$.items", f"{{type: offset, limit: {SIZE}, total: $.total}}", 8,
     "offset 6 answered with a no_data response rule but the vendor reported 8 records"),
], ids=["total_pages", "offset_total"])
def test_a_no_data_answer_before_the_announced_count_fails_the_run(
        path: str, records: str, paginator: str, announced: int, refusal: str, tiny_vendor: TinyVendor,
        etrmflow_project: EtrmflowProject) -> None:
    """The vendor announced more (5 pages, 8 records) than it then serves (3 pages, 6 records):
    ending at its no_data answer would lose what it promised, as an empty page before the
    announced count would. The run fails, resumable."""
    tiny_vendor.announced = announced
    project = _tiny(etrmflow_project, tiny_vendor, path, records, paginator)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    outcome = project.pipeline_result()
    assert outcome["error_type"] == "PaginationError" and refusal in outcome["error"], outcome["error"]
    assert "refusing to end the walk short" in outcome["error"]
    assert outcome["counts"]["pages"] == 3 and outcome["counts"]["fetched"] == 6
    assert outcome["resumable"] is not False and outcome["missing"].startswith("pages after page 3 ")
    assert project.query("SELECT trade_id FROM trades") == _first_trades(6)


def test_a_looping_cursor_across_a_resume_is_refused_before_the_repeat_is_written(
        tiny_vendor: TinyVendor, etrmflow_project: EtrmflowProject) -> None:
    """Page 3's cursor points back to page 2. The first run refuses the cursor (pages 1 and 2
    written). A resumed run fetches page 3 again, writes it (its records are new) and follows
    the cursor it no longer remembers; page 2's body it does remember, so the loop is refused
    there and page 2 is not written a second time."""
    tiny_vendor.loop_to = "2"
    project = _tiny(etrmflow_project, tiny_vendor, "/cursor", "$.trades",
                    "{type: cursor, cursor: $.next_cursor}", APPEND)
    first = project.run("run", "pipelines/trades.yml")
    assert first.exit_code == 1, first.output
    assert "cursor '2' was already seen" in project.pipeline_result()["error"]

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 1, resumed.output
    outcome = project.pipeline_result()
    assert outcome["error_type"] == "PaginationError", outcome["error"]
    assert "page 4 (GET " in outcome["error"] and "is byte for byte the same as page 2" in outcome["error"]
    assert "query parameter 'cursor'" in outcome["error"]
    assert outcome["counts"]["pages"] == 1  # page 3
    assert project.query("SELECT trade_id FROM trades") == _first_trades(6)  # each once, in append mode


TARIFF = """\
name: tariff_hour
version: "1"
primary_key: [hour]
schema:
  type: object
  required: [hour, price]
  properties:
    hour: {type: integer}
    price: {type: number}
"""


def test_pages_with_the_same_records_under_another_envelope_are_not_refused(
        tiny_vendor: TinyVendor, etrmflow_project: EtrmflowProject) -> None:
    """Only a page byte for byte the same is a repeat: a vendor may say what tells two pages
    apart only outside the records (here each day's constant tariff, the day in the envelope)."""
    project = _tiny(etrmflow_project, tiny_vendor, "/tariffs", "$.hours", "{type: page_number, has_more: $.next_page}",
                    "name: tariffs\nsource: {connector: vendor, stream: trades}\ncontract: tariff_hour\n"
                    "sinks:\n  - {type: sqlite, table: tariffs, mode: append}\n")
    project.write({"contracts/tariff_hour.yml": TARIFF})

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert project.pipeline_result()["counts"]["pages"] == 3
    assert project.query("SELECT hour, COUNT(*) FROM tariffs GROUP BY hour") == [(0, 3), (1, 3), (2, 3)]
