"""The located YAML loader: positions, duplicate keys, plain scalars, merges, and its errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from etrmflow.config import yamlfile
from etrmflow.config.yamlfile import (
    YamlDocument,
    load_yaml,
    parse_vars_text,
    parse_yaml,
)
from etrmflow.errors import ConfigError


def parse(text: str) -> YamlDocument:
    return parse_yaml(textwrap.dedent(text), display="f.yml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return [str(issue) for issue in caught.value.issues]


# --- locations -----------------------------------------------------------------------------------

def test_every_key_and_value_has_its_line_and_column() -> None:
    document = parse("""\
        name: acme
        streams:
          trades:
            params: {limit: 100, since: x}
            tags:
              - a
              - {b: 1}
        """)
    assert document.key_marks[("streams", "trades", "params")] == (4, 5)
    assert document.value_marks[("streams", "trades", "params")] == (4, 13)
    assert document.key_marks[("streams", "trades", "params", "since")] == (4, 26)
    assert document.value_marks[("streams", "trades", "params", "since")] == (4, 33)
    assert document.value_marks[("streams", "trades", "tags", 1)] == (7, 9)
    assert document.value_marks[("streams", "trades", "tags", 1, "b")] == (7, 13)


def test_locate_falls_back_to_the_nearest_ancestor() -> None:
    document = parse("a:\n  b: {c: 1}\n")
    assert str(document.locate(("a", "b", "missing"))) == "f.yml:2:6"
    assert str(document.locate(("a", "b"), key=True)) == "f.yml:2:3"
    assert str(document.locate(("nowhere",))) == "f.yml:1:1"


def test_locate_in_text_points_into_one_line_scalars_only() -> None:
    document = parse("""\
        plain: a > 0 and b
        quoted: "a > 0 and b"
        folded: >
          a > 0
          and b
        """)
    assert str(document.locate_in_text(("plain",), 7)) == "f.yml:1:14"
    assert str(document.locate_in_text(("quoted",), 7)) == "f.yml:2:16"
    assert str(document.locate_in_text(("folded",), 7)) == "f.yml:3:9"  # the value itself
    assert str(document.locate_in_text(("plain",), 0)) == "f.yml:1:8"


# --- duplicate keys ------------------------------------------------------------------------------

def test_duplicate_keys_are_errors_at_every_level_and_in_flow_mappings() -> None:
    assert problems("""\
        name: a
        streams:
          trades:
            path: /a
            params: {limit: 1, limit: 2}
            path: /b
        name: b
        """) == [
        "f.yml:5:24: streams.trades.params.limit: duplicate key 'limit', first defined at line 5, column 14 "
        "(YAML would silently keep only the last one; remove or rename one)",
        "f.yml:6:5: streams.trades.path: duplicate key 'path', first defined at line 4 "
        "(YAML would silently keep only the last one; remove or rename one)",
        "f.yml:7:1: name: duplicate key 'name', first defined at line 1 "
        "(YAML would silently keep only the last one; remove or rename one)",
    ]


def test_a_key_overriding_a_merged_key_is_not_a_duplicate() -> None:
    document = parse("""\
        base: &retry {max_attempts: 5, jitter: full}
        stream:
          <<: *retry
          max_attempts: 3
        """)
    assert document.data["stream"] == {"max_attempts": 3, "jitter": "full"}
    assert document.key_marks[("stream", "max_attempts")] == (4, 3)
    assert document.key_marks[("stream", "jitter")] == (1, 32)  # where the merged value is written


def test_merge_keys_accept_a_list_of_anchors_and_refuse_anything_else() -> None:
    document = parse("a: &a {x: 1}\nb: &b {y: 2}\nc: {<<: [*a, *b], z: 3}\n")
    assert document.data["c"] == {"x": 1, "y": 2, "z": 3}
    assert problems("a:\n  <<: 5\n") == [
        "f.yml:2:7: a: a merge key (<<) takes an alias to a mapping, or a list of them"]


# --- plain scalars ---------------------------------------------------------------------------------

def test_dates_and_timestamps_stay_strings() -> None:
    document = parse("""\
        trade_date: 2025-03-30
        delivery_start: 2025-03-30T00:00:00
        with_offset: 2025-10-26T02:00:00+01:00
        """)
    assert document.data == {"trade_date": "2025-03-30", "delivery_start": "2025-03-30T00:00:00",
                             "with_offset": "2025-10-26T02:00:00+01:00"}


def test_plain_scalars_follow_the_yaml_1_2_core_schema() -> None:
    document = parse("""\
        zone: NO
        flags: [yes, no, on, off, true, False, TRUE]
        leading_zero: 012
        octal: 0o17
        hex: 0x1F
        clock: 12:30
        exponent: 1e3
        grouped: 1_000
        negative: -5
        price: 40.45
        nothing: ~
        """)
    assert document.data == {
        "zone": "NO", "flags": ["yes", "no", "on", "off", True, False, True], "leading_zero": 12,
        "octal": 15, "hex": 31, "clock": "12:30", "exponent": 1000.0, "grouped": 1000, "negative": -5,
        "price": 40.45, "nothing": None,
    }


def test_keys_are_names_as_written() -> None:
    assert parse("1: a\ntrue: b\nnull: c\n").data == {"1": "a", "true": "b", "null": "c"}
    assert problems("? [a, b]\n: c\n") == ["f.yml:1:3: mapping keys must be plain scalars"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "--- # a comment\n...\n"])
def test_an_empty_file_holds_no_data(text: str) -> None:
    assert parse_yaml(text, display="f.yml").data is None


# --- what is refused ------------------------------------------------------------------------------

def test_tags_that_construct_objects_are_refused() -> None:
    assert problems("a: !!python/object/apply:os.system [ls]\nb: !custom 1\nc: !!set {x: null}\n") == [
        "f.yml:1:4: a: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' "
        "(etrmflow files hold plain values; remove the tag)",
        "f.yml:2:4: b: unsupported YAML tag '!custom' (etrmflow files hold plain values; remove the tag or quote "
        "the value)",
        "f.yml:3:4: c: unsupported YAML tag 'tag:yaml.org,2002:set' (etrmflow files hold plain values; remove "
        "the tag)",
    ]


def test_a_recursive_alias_is_an_error_not_a_crash() -> None:
    assert problems("a: &loop [1, *loop]\n") == [
        "f.yml:1:4: a[1]: this alias refers to a value that contains it "
        "(a recursive alias cannot be turned into configuration)",
    ]


def test_an_alias_bomb_stops_at_the_value_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlfile, "MAX_VALUES", 100)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b]\n"
    assert problems(bomb) == [  # b alone is 111 values; the anchor's last item is where it tips over
        "f.yml:1:35: b[7][9]: the file expands to more than 100 values "
        "(aliases (*name) that repeat large anchors multiply; repeat less)",
    ]


# --- syntax errors ------------------------------------------------------------------------------

def test_a_syntax_error_has_a_numbered_excerpt_and_a_caret() -> None:
    assert problems("""\
        name: acme
        streams:
          trades:
            path: /a
             records: $.x
            paginator: {type: single}
        """) == ["""\
f.yml:5:13: YAML syntax error: mapping values are not allowed here (indent this key under its parent, or quote \
a value that contains ': ')
  3 |   trades:
  4 |     path: /a
  5 |      records: $.x
    |             ^
  6 |     paginator: {type: single}"""]


def test_an_unclosed_bracket_points_where_it_opens() -> None:
    assert problems("a: 1\nb: [1, 2\nc: 3\n") == ["""\
f.yml:2:4: YAML syntax error: the '[' that starts here is not closed before line 3, column 2 (add the closing \
']', or quote a value that contains ':' or ',')
  1 | a: 1
  2 | b: [1, 2
    |    ^
  3 | c: 3"""]
    assert problems("a: {b: 1\n") == ["""\
f.yml:1:4: YAML syntax error: this '{' is never closed (add the closing '}')
  1 | a: {b: 1
    |    ^"""]


def test_tabs_and_second_documents_say_how_to_fix_them() -> None:
    assert problems("a:\n\tb: 1\n") == ["""\
f.yml:2:1: YAML syntax error: found character '\\t' that cannot start any token (indent with spaces: YAML \
does not allow tabs)
  1 | a:
  2 | \tb: 1
    | ^"""]
    assert problems("a: 1\n---\nb: 2\n")[0].startswith(
        "f.yml:2:1: YAML syntax error: a second YAML document ('---') in one file (remove the '---' line and what "
        "follows it)")


def test_an_unreadable_file_is_a_located_issue(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_yaml(tmp_path / "absent.yml", "connectors/absent.yml")
    assert [str(issue) for issue in caught.value.issues] == [
        "connectors/absent.yml: cannot read the file: No such file or directory"]
    (tmp_path / "latin1.yml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_yaml(tmp_path / "latin1.yml", "latin1.yml")
    assert str(caught.value.issues[0]).startswith("latin1.yml: cannot read the file: 'utf-8' codec can't decode")


# --- --vars ---------------------------------------------------------------------------------------

def test_vars_text_is_read_like_project_files() -> None:
    assert parse_vars_text("{since: 2025-01-01, page_size: 500, zone: NO}") == {
        "since": "2025-01-01", "page_size": 500, "zone": "NO"}
    assert parse_vars_text('{"desk": "power"}') == {"desk": "power"}


@pytest.mark.parametrize(("text", "message"), [
    ("{since: ", "not valid YAML or JSON at column 9: the text ends where a value is expected; "
                 "e.g. --vars '{since: 2025-01-01}'"),
    ("{since: 2025-01-01", "not valid YAML or JSON at column 1: this '{' is never closed; "
                           "e.g. --vars '{since: 2025-01-01}'"),
    ("[1, 2]", "must be a mapping of names to values, e.g. --vars '{since: 2025-01-01, page_size: 500}'"),
    ("", "must be a mapping of names to values, e.g. --vars '{since: 2025-01-01, page_size: 500}'"),
])
def test_bad_vars_text_gives_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_vars_text(text)
    assert str(caught.value) == message
