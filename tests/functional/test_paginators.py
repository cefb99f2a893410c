"""Every paginator walks the sandbox's trades exactly once, over real HTTP."""

from __future__ import annotations

import pytest

from etrmflow.testing import EtrmflowProject, SandboxFactory

from . import PAGE_SIZE, TRADES, assert_every_trade_once, sandbox_project

FULL_PAGES = -(-TRADES // PAGE_SIZE)
KEY = '{type: api_key, in: header, name: X-API-Key, value: sandbox-key}'

PAGINATION_CASES = {
    # name: (stream options, pages fetched)
    "page_number_has_more": (dict(path="/api/v2/trades/pages", params="{page_size: 10}", records="$.data",
                                  paginator="{type: page_number, param: page, has_more: $.next_page}"),
                             FULL_PAGES),
    "page_number_total_pages": (dict(path="/api/v2/trades/pages", params="{page_size: 10}", records="$.data",
                                     paginator="{type: page_number, param: page, total_pages: $.total_pages}"),
                                FULL_PAGES),
    # Neither flag nor total: the walk ends at the first empty page, which is fetched too.
    "page_number_empty_page": (dict(path="/api/v2/trades/pages", params="{page_size: 10}", records="$.data",
                                    paginator="{type: page_number, param: page, start: 1}"),
                               FULL_PAGES + 1),
    # The sandbox sends total as a string ("65").
    "offset_string_total": (dict(path="/api/v2/trades/offset", params="{}", records="$.items",
                                 paginator="{type: offset, offset_param: offset, limit_param: limit, "
                                           "limit: 10, total: $.total}"),
                            FULL_PAGES),
    "cursor": (dict(path="/api/v2/trades", params="{limit: 10}", records="$.trades",
                    paginator="{type: cursor, cursor: $.next_cursor, param: cursor}"),
               FULL_PAGES),
    "next_link_body": (dict(path="/api/v2/trades/links", params="{page_size: 10}", records="$.trades",
                            paginator="{type: next_link, in: body, path: $.links, rel: next}"),
                       FULL_PAGES),
    "next_link_header": (dict(path="/api/v2/trades/link-header", params="{per_page: 10}", records="$",
                              paginator="{type: next_link, in: header}"),
                         FULL_PAGES),
    "single": (dict(path="/api/v2/trades/pages", params="{page_size: 1000}", records="$.data",
                    paginator="{type: single}"),
               1),
}


@pytest.mark.parametrize("case", sorted(PAGINATION_CASES))
def test_paginator_walks_every_trade_once(case: str, etrmflow_project: EtrmflowProject,
                                          sandbox_vendor_factory: SandboxFactory) -> None:
    stream, pages = PAGINATION_CASES[case]
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=KEY, **stream)

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert_every_trade_once(project, vendor, pages=pages)


def test_next_link_with_the_api_key_in_the_query_masks_it_everywhere(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    # The sandbox echoes the whole request URL, api_key included, in its next links.
    key = "query-key-3b9e71d0c4"
    vendor = sandbox_vendor_factory(trades=TRADES, api_key=key)
    project = sandbox_project(etrmflow_project, vendor, auth='{type: api_key, in: query, name: api_key, '
                              'value: "{{ secret(\'VENDOR_KEY\') }}"}', path="/api/v2/trades/links",
                              params="{page_size: 10}", records="$.trades",
                              paginator="{type: next_link, in: body, path: $.links}")

    result = project.run("run", "pipelines/trades.yml", env={"VENDOR_KEY": key})

    assert result.exit_code == 0, result.output
    assert_every_trade_once(project, vendor, pages=FULL_PAGES)
    urls = {letter["source"]["request_url"].split("127.0.0.1:")[1].split("/", 1)[1]
            for letter in project.dead_letters("trades")}
    # Broken trades sit on pages 2, 4 and 6; each URL carries the key once, masked.
    assert urls == {"api/v2/trades/links?page_size=10&page=2&api_key=***",
                    "api/v2/trades/links?page_size=10&page=4&api_key=***",
                    "api/v2/trades/links?page_size=10&page=6&api_key=***"}
    assert project.files_containing(key) == []
    assert key not in result.stdout + result.stderr


def test_max_pages_stops_a_walk_that_goes_on(etrmflow_project: EtrmflowProject,
                                              sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=KEY,
                              paginator="{type: cursor, cursor: $.next_cursor, max_pages: 3}")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1, result.output
    assert project.pipeline_result()["error"] == (
        "cursor paginator walked 3 pages without reaching the end (max_pages: 3); "
        "raise max_pages if this is expected")
    assert vendor.stats()["data_requests"] == 3


def test_max_pages_equal_to_the_walk_is_enough(etrmflow_project: EtrmflowProject,
                                                sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(etrmflow_project, vendor, auth=KEY,
                              paginator=f"{{type: cursor, cursor: $.next_cursor, max_pages: {FULL_PAGES}}}")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert_every_trade_once(project, vendor, pages=FULL_PAGES)



def test_request_time_templates_render_per_request(etrmflow_project: EtrmflowProject,
                                                   sandbox_vendor_factory: SandboxFactory) -> None:
    """The vendor's offset comes from a template over the walk's page number, rendered per request."""
    vendor = sandbox_vendor_factory(trades=TRADES)
    project = sandbox_project(
        etrmflow_project, vendor, auth="{type: bearer, token: sandbox-token}",
        path="/api/v2/trades/offset", records="$.items",
        params="{limit: 10, offset: \"{{ (page - 1) * 10 }}\", seen: \"{{ offset }}\"}",
        paginator="{type: page_number, param: pg}")

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    # 7 pages of records, then the empty 8th page ends the walk: every trade exactly once
    assert_every_trade_once(project, vendor, pages=8)
    plan_params = project.plan()["pipelines"][0]["stream"]["params"]
    assert plan_params["offset"] == "{{ (page - 1) * 10 }}"  # stays a template in the plan
