"""Safe YAML loading that remembers where every value came from.

Deliberate differences from ``yaml.safe_load``:

* every key path maps to its line and column, so errors can say ``file.yml:14:5``;
* a key repeated in one mapping is an error (YAML silently keeps the last one);
* dates and timestamps stay strings. PyYAML would turn ``2025-03-30T00:00:00`` into a naive
  datetime, which around a clock change is a wrong delivery hour; models parse them later
  with an explicit timezone;
* plain scalars follow the YAML 1.2 core schema, not YAML 1.1: ``NO`` (Norway's bidding zone),
  ``yes``, ``on`` and ``off`` stay strings, ``012`` is twelve (not octal ten) and ``12:30`` is a
  string (not the sexagesimal 750);
* a syntax error, an unknown tag or a recursive alias is a located config issue, never a crash.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from etrmflow.config.yamlerrors import syntax_issue
from etrmflow.errors import ConfigError, ConfigIssue, Location

KeyPath = tuple[str | int, ...]

MAX_VALUES = 1_000_000
"""Most values one file may expand to: aliases can make a few lines a billion values."""
MAX_DEPTH = 100
"""Deepest nesting of lists and mappings: configuration needs a handful of levels, and a file
of ``[[[[...`` would exhaust Python's stack in the YAML reader."""
_TOO_DEEP = f"the file is nested more than {MAX_DEPTH} levels deep"

_PLAIN_COLLECTIONS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "merge"))
"""Plain values only: ``!!binary`` would give bytes, ``!!timestamp`` a datetime."""
_REPLACED_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("timestamp", "bool", "int", "float")}
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and without the implicit timestamp resolver."""


def _resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    table = {first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
             for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    additions = ((_BOOL, "tTfF", "bool"), (_INT, "-+0123456789", "int"), (_FLOAT, "-+0123456789.", "float"))
    for regexp, firsts, name in additions:
        for first in firsts:
            table.setdefault(first, []).append((f"tag:yaml.org,2002:{name}", regexp))
    return table


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if len(text) > 4300:  # Python reads no more decimal digits; hex or octal would slip through
        raise ValueError("too many digits")
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


_Loader.yaml_implicit_resolvers = _resolvers()
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def format_key_path(path: KeyPath) -> str:
    """``("sinks", 0, "path")`` -> ``sinks[0].path``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(slots=True)
class YamlDocument:
    """A parsed YAML file plus the position of each value and each key in it."""

    path: Path
    display: str
    data: Any
    value_marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    inline_scalars: dict[KeyPath, int] = field(default_factory=dict)
    """One-line scalars: how many characters precede the text (0 plain, 1 quoted)."""

    def locate(self, path: KeyPath, *, key: bool = False) -> Location:
        """The location of ``path`` (of its key when ``key``), else of its nearest ancestor."""
        marks = self.key_marks if key else self.value_marks
        probe = tuple(path)
        while probe:
            if probe in marks:
                line, column = marks[probe]
                return Location(file=self.display, line=line, column=column)
            if probe in self.value_marks:
                line, column = self.value_marks[probe]
                return Location(file=self.display, line=line, column=column)
            probe = probe[:-1]
        line, column = self.value_marks.get((), (1, 1))
        return Location(file=self.display, line=line, column=column)

    def locate_in_text(self, path: KeyPath, column: int) -> Location:
        """The location of the 1-based ``column`` of a string value (e.g. of an expression error);
        the value's own location when the text spans lines or holds escapes."""
        start = self.locate(path)
        if path not in self.inline_scalars or column < 1:
            return start
        return Location(file=self.display, line=start.line,
                        column=start.column + self.inline_scalars[path] + column - 1)


def load_yaml(path: Path, display: str | None = None) -> YamlDocument:
    """Load one YAML file; raise ConfigError (with every duplicate key) on problems."""
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(ConfigIssue(location=Location(file=display), key_path="",
                                      message=f"cannot read the file: {reason}")) from None
    return parse_yaml(text, display=display, path=path)


def parse_yaml(text: str, *, display: str, path: Path | None = None) -> YamlDocument:
    """Parse YAML text; raise ConfigError with every problem found."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(syntax_issue(exc, text, display)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(ConfigIssue(location=Location(file=display), key_path="",
                                      message=f"YAML error: {exc}")) from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        mark = loader.get_mark()
        raise ConfigError(ConfigIssue(location=Location(file=display, line=mark.line + 1, column=mark.column + 1),
                                      key_path="", message=_TOO_DEEP)) from None
    finally:
        loader.dispose()
    document = YamlDocument(path=path or Path(display), display=display, data=None)
    issues: list[ConfigIssue] = []
    if node is not None:
        document.data = _Builder(loader, document, issues).build(node, ())
    if issues:
        raise ConfigError(issues)
    return document


def parse_vars_text(text: str) -> dict[str, Any]:
    """The ``--vars`` option: a YAML or JSON mapping, read like project files (dates stay strings).

    Raises ValueError with a one-line message naming the column of a syntax error.
    """
    try:
        document = parse_yaml(text, display="--vars")
    except ConfigError as exc:
        issue = exc.issues[0]
        where = f" at column {issue.location.column}" if issue.location.line == 1 else ""
        message = issue.message.removeprefix("YAML syntax error: ")
        raise ValueError(f"not valid YAML or JSON{where}: {message}; e.g. --vars '{{since: 2025-01-01}}'") from None
    if not isinstance(document.data, dict):
        raise ValueError("must be a mapping of names to values, e.g. --vars '{since: 2025-01-01, page_size: 500}'")
    return document.data


class _Builder:
    """Turns a composed node tree into plain Python values, recording marks on the way."""

    def __init__(self, loader: _Loader, document: YamlDocument, issues: list[ConfigIssue]) -> None:
        self.loader = loader
        self.document = document
        self.issues = issues
        self.active: set[int] = set()  # nodes being built: meeting one again is a recursive alias
        self.count = 0

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.document.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.count += 1
        if self.count > MAX_VALUES:
            if self.count == MAX_VALUES + 1:
                self._issue(node, path, f"the file expands to more than {MAX_VALUES} values",
                            hint="aliases (*name) that repeat large anchors multiply; repeat less")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if len(path) >= MAX_DEPTH:
            self._issue(node, path, _TOO_DEEP, hint="configuration needs a few levels of nesting")
            return None
        if node.tag not in _PLAIN_COLLECTIONS:
            self._issue(node, path, f"unsupported YAML tag '{node.tag}'",
                        hint="etrmflow files hold plain values; remove the tag")
            return None
        if id(node) in self.active:
            self._issue(node, path, "this alias refers to a value that contains it",
                        hint="a recursive alias cannot be turned into configuration")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, path + (index,)) for index, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        if node.start_mark.line == node.end_mark.line and node.style in (None, "'", '"') \
                and "\\" not in node.value and "''" not in node.value:
            self.document.inline_scalars[path] = 0 if node.style is None else 1
        if node.tag not in _SCALAR_TAGS:
            self._issue(node, path, f"unsupported YAML tag '{node.tag}'",
                        hint="etrmflow files hold plain values; remove the tag or quote the value")
            return None
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, LookupError, yaml.constructor.ConstructorError) as exc:
            if "digits" in str(exc):  # more than Python reads (4300)
                self._issue(node, path, "this number has too many digits",
                            hint="quote it if it is an identifier, not a number")
            else:  # an explicit tag on a value it does not fit: !!int abc
                self._issue(node, path, f"'{node.value}' is not a valid {node.tag.rpartition(':')[2]}",
                            hint="remove the tag or quote the value")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self._issue(node, path, f"{node.value} is not a finite number",
                        hint="quote it if it is text; no setting takes NaN or infinity")
            return None
        return value

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[Any, Any]:
        self._check_duplicates(node, path)
        try:
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys; later keys override
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark or node.start_mark
            self._issue_at(mark, path, "a merge key (<<) takes an alias to a mapping, or a list of them")
            return {}
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(key_node, path, "mapping keys must be plain scalars")
                continue
            key = self._scalar(key_node, path)
            key = key if isinstance(key, str) else key_node.value or "null"  # 1: and true: as written
            child = path + (key,)
            self.document.key_marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, child)
        return result

    def _check_duplicates(self, node: yaml.MappingNode, path: KeyPath) -> None:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            if key in seen:
                first = seen[key].start_mark
                where = f"line {first.line + 1}" + (f", column {first.column + 1}"
                                                    if first.line == key_node.start_mark.line else "")
                self._issue(key_node, path + (key,), f"duplicate key '{key}', first defined at {where}",
                            hint="YAML would silently keep only the last one; remove or rename one")
            else:
                seen[key] = key_node

    def _issue(self, node: yaml.Node, path: KeyPath, message: str, hint: str = "") -> None:
        self._issue_at(node.start_mark, path, message, hint)

    def _issue_at(self, mark: Any, path: KeyPath, message: str, hint: str = "") -> None:
        location = Location(file=self.document.display, line=mark.line + 1, column=mark.column + 1)
        self.issues.append(ConfigIssue(location=location, key_path=format_key_path(path),
                                       message=message, hint=hint))

