"""The built-in paginators as pure state machines: canned responses in, next requests out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from etrmflow.builtins.paginators import (
    Cursor, NextLink, Offset, PageNumber, SinglePage, etrmflow_paginator_types,
)
from etrmflow.components import Paginator, Request, Response
from etrmflow.errors import PaginationError

URL = "https://vendor.example/api/trades"


def page(body: Any = None, *, headers: Mapping[str, str] | None = None, url: str = URL) -> Response:
    return Response(status=200, headers=headers or {}, body=body, url=url)


def walk(paginator: Paginator, pages: list[tuple[Response, list[Any]]],
         first: Request | None = None) -> list[dict[str, Any]]:
    """Params of every request the paginator asks for, until it says stop; fails if it asks for
    more pages than were canned."""
    request: Request | None = paginator.first(first or Request(method="GET", url="/api/trades",
                                                               params={"size": 10}))
    asked = []
    for response, records in pages:
        assert request is not None, f"the walk ended after {len(asked)} of {len(pages)} pages"
        asked.append(dict(request.params))
        request = paginator.next(request, response, records)
    assert request is None, f"the walk goes on after {len(pages)} pages: {request}"
    return asked


def records(count: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(count)]


def test_every_builtin_paginator_is_registered() -> None:
    assert {cls.type_name for cls in etrmflow_paginator_types()} == {
        "single", "page_number", "offset", "cursor", "next_link"}


def test_single_asks_for_nothing_more() -> None:
    assert walk(SinglePage({}), [(page({"data": []}), records(3))]) == [{"size": 10}]


# --- page_number -------------------------------------------------------------------------------

def test_page_number_follows_has_more_and_keeps_other_params() -> None:
    paginator = PageNumber({"param": "p", "has_more": "$.more"})

    asked = walk(paginator, [(page({"more": True}), records(10)), (page({"more": 1}), records(10)),
                             (page({"more": False}), records(4))])

    assert asked == [{"size": 10, "p": 1}, {"size": 10, "p": 2}, {"size": 10, "p": 3}]


@pytest.mark.parametrize(("flag", "more"), [("true", True), ("True", True), ("1", True), ("false", False),
                                            ("0", False), ("", False), (None, False), (0, False)])
def test_page_number_reads_has_more_flags_as_vendors_send_them(flag: Any, more: bool) -> None:
    paginator = PageNumber({"has_more": "$.more"})
    request = paginator.first(Request(method="GET", url="/t"))

    following = paginator.next(request, page({"more": flag}), records(10))

    assert (following.params["page"] if following else None) == (2 if more else None)


def test_page_number_fails_when_the_has_more_path_is_missing() -> None:
    paginator = PageNumber({"has_more": "$.meta.more"})
    request = paginator.first(Request(method="GET", url="/t"))

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"more": True}), records(10))

    assert str(caught.value) == "has_more path $.meta.more not found in the response"


def test_page_number_refuses_an_empty_page_that_says_more_follow() -> None:
    paginator = PageNumber({"has_more": "$.more"})
    request = paginator.first(Request(method="GET", url="/t"))

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"more": True}), [])

    assert str(caught.value) == "an empty page says more pages follow: refusing to loop"


@pytest.mark.parametrize("total", [3, "3"])
def test_page_number_stops_at_total_pages(total: Any) -> None:
    paginator = PageNumber({"total_pages": "$.total_pages"})
    body = {"total_pages": total}

    asked = walk(paginator, [(page(body), records(10)), (page(body), records(10)), (page(body), records(2))])

    assert [params["page"] for params in asked] == [1, 2, 3]


def test_page_number_counts_total_pages_from_its_start() -> None:
    paginator = PageNumber({"total_pages": "$.pages", "start": 0})

    asked = walk(paginator, [(page({"pages": 2}), records(10)), (page({"pages": 2}), records(1))])

    assert [params["page"] for params in asked] == [0, 1]


def test_page_number_fails_on_a_short_walk_before_the_known_total() -> None:
    paginator = PageNumber({"total_pages": "$.total_pages"})
    request = paginator.first(Request(method="GET", url="/t"))
    request = paginator.next(request, page({"total_pages": 3}), records(10))
    assert request is not None

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"total_pages": 3}), [])

    assert str(caught.value) == "page 2 is empty but the vendor reports 3 pages"


def test_page_number_fails_on_a_total_that_is_not_a_number() -> None:
    paginator = PageNumber({"total_pages": "$.total_pages"})
    request = paginator.first(Request(method="GET", url="/t"))

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"total_pages": "many"}), records(10))

    assert str(caught.value) == "total_pages should be a number, got 'many'"


def test_page_number_without_flag_or_total_stops_at_the_first_empty_page() -> None:
    asked = walk(PageNumber({}), [(page({}), records(10)), (page({}), records(3)), (page({}), [])])

    assert [params["page"] for params in asked] == [1, 2, 3]


def test_next_never_changes_the_request_it_is_given() -> None:
    paginator = PageNumber({})
    request = paginator.first(Request(method="GET", url="/t", params={"size": 10}))

    following = paginator.next(request, page({}), records(10))

    assert (request.params, following.params if following else None) == (
        {"size": 10, "page": 1}, {"size": 10, "page": 2})


# --- max_pages ---------------------------------------------------------------------------------

def test_a_walk_of_exactly_max_pages_is_allowed() -> None:
    paginator = PageNumber({"max_pages": 3})

    asked = walk(paginator, [(page({}), records(1)), (page({}), records(1)), (page({}), [])])

    assert len(asked) == 3


def test_a_walk_past_max_pages_fails_instead_of_stopping_quietly() -> None:
    paginator = Cursor({"cursor": "$.next", "max_pages": 2})
    request = paginator.first(Request(method="GET", url="/t"))
    request = paginator.next(request, page({"next": "c1"}), records(1))
    assert request is not None

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"next": "c2"}), records(1))

    assert str(caught.value) == ("cursor paginator walked 2 pages without reaching the end (max_pages: 2); "
                                 "raise max_pages if this is expected")


# --- offset ------------------------------------------------------------------------------------

def test_offset_stops_at_a_total_sent_as_a_string() -> None:
    paginator = Offset({"limit": 10, "total": "$.total"})
    body = {"total": "25"}

    asked = walk(paginator, [(page(body), records(10)), (page(body), records(10)), (page(body), records(5))])

    assert asked == [{"size": 10, "offset": 0, "limit": 10}, {"size": 10, "offset": 10, "limit": 10},
                     {"size": 10, "offset": 20, "limit": 10}]


def test_offset_advances_by_the_records_received_when_the_vendor_caps_the_page() -> None:
    paginator = Offset({"limit": 10, "total": "$.total", "offset_param": "skip", "limit_param": "take"})
    body = {"total": 12}

    asked = walk(paginator, [(page(body), records(5)), (page(body), records(5)), (page(body), records(2))])

    assert [(params["skip"], params["take"]) for params in asked] == [(0, 10), (5, 10), (10, 10)]


def test_offset_fails_on_an_empty_page_before_the_total() -> None:
    paginator = Offset({"limit": 10, "total": "$.total"})
    request = paginator.first(Request(method="GET", url="/t"))
    request = paginator.next(request, page({"total": 25}), records(10))
    assert request is not None

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"total": 25}), [])

    assert str(caught.value) == "empty page at offset 10 but the vendor reports 25 records"


def test_offset_fails_when_the_total_path_is_missing() -> None:
    paginator = Offset({"total": "$.count"})
    request = paginator.first(Request(method="GET", url="/t"))

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"total": 25}), records(10))

    assert str(caught.value) == "total path $.count not found in the response"


def test_offset_without_a_total_stops_at_the_first_empty_page() -> None:
    paginator = Offset({"limit": 2, "start": 4})

    asked = walk(paginator, [(page({}), records(2)), (page({}), records(1)), (page({}), [])])

    assert [params["offset"] for params in asked] == [4, 6, 7]


# --- cursor ------------------------------------------------------------------------------------

@pytest.mark.parametrize("end", [None, "", "absent"])
def test_cursor_sends_each_cursor_back_until_there_is_none(end: Any) -> None:
    paginator = Cursor({"cursor": "$.meta.next", "param": "after"})
    last = {"meta": {}} if end == "absent" else {"meta": {"next": end}}

    asked = walk(paginator, [(page({"meta": {"next": "c1"}}), records(2)),
                             (page({"meta": {"next": 42}}), records(2)), (page(last), records(1))])

    assert asked == [{"size": 10}, {"size": 10, "after": "c1"}, {"size": 10, "after": "42"}]


def test_cursor_seen_twice_is_a_loop() -> None:
    paginator = Cursor({"cursor": "$.next"})
    request = paginator.first(Request(method="GET", url="/t"))
    request = paginator.next(request, page({"next": "abc"}), records(1))
    assert request is not None

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"next": "abc"}), records(1))

    assert str(caught.value) == "cursor 'abc' was already seen in this walk: the vendor is looping"


# --- next_link ---------------------------------------------------------------------------------

def test_next_link_follows_a_relative_url_in_the_body_with_its_own_query() -> None:
    paginator = NextLink({"path": "$.next"})
    request = paginator.first(Request(method="GET", url="/api/trades", params={"size": 10}))

    following = paginator.next(request, page({"next": "trades?page=2&size=10"}), records(10))

    assert following is not None
    assert (following.url, following.params) == ("https://vendor.example/api/trades?page=2&size=10", {})
    assert request.url == "/api/trades"


def test_next_link_picks_the_rel_from_a_links_list() -> None:
    paginator = NextLink({"path": "$.links", "rel": "next"})
    links = [{"rel": "self", "href": URL}, {"rel": "next", "href": URL + "?page=2"}]
    request = paginator.first(Request(method="GET", url=URL))

    following = paginator.next(request, page({"links": links}), records(10))
    last = paginator.next(following, page({"links": links[:1]}, url=URL + "?page=2"), records(3))

    assert (following.url if following else None, last) == (URL + "?page=2", None)


def test_next_link_reads_the_link_header_whatever_its_case() -> None:
    paginator = NextLink({"in": "header"})
    header = f'<{URL}?page=1>; rel="prev", <{URL}?page=3>; rel="next"'
    request = paginator.first(Request(method="GET", url=URL + "?page=2"))

    following = paginator.next(request, page([], headers={"link": header}, url=URL + "?page=2"), records(1))
    last = paginator.next(following, page([], url=URL + "?page=3"), records(1))

    assert (following.url if following else None, last) == (URL + "?page=3", None)


def test_next_link_back_to_the_page_just_fetched_is_a_loop() -> None:
    paginator = NextLink({"path": "$.next"})
    request = paginator.first(Request(method="GET", url=URL))

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"next": URL}), records(10))

    assert str(caught.value) == f"next link {URL} was already seen in this walk: the vendor is looping"


def test_next_link_to_an_earlier_page_is_a_loop() -> None:
    paginator = NextLink({"path": "$.next"})
    request = paginator.first(Request(method="GET", url=URL))
    request = paginator.next(request, page({"next": URL + "?page=2"}), records(10))
    assert request is not None

    with pytest.raises(PaginationError) as caught:
        paginator.next(request, page({"next": URL}, url=URL + "?page=2"), records(10))

    assert "already seen in this walk" in str(caught.value)
