"""Safe YAML loading that remembers where every value came from.

Three deliberate differences from ``yaml.safe_load``:

* every key path maps to its line and column, so errors can say ``file.yml:14:5``;
* a key repeated in one mapping is an error (YAML silently keeps the last one);
* dates and timestamps stay strings. PyYAML would turn ``2025-03-30T00:00:00`` into a naive
  datetime, which around a clock change is a wrong delivery hour; models parse them later
  with an explicit timezone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from etrmflow.errors import ConfigError, ConfigIssue, Location

KeyPath = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader without the implicit timestamp resolver."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


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


def load_yaml(path: Path, display: str | None = None) -> YamlDocument:
    """Load one YAML file; raise ConfigError (with every duplicate key) on problems."""
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(ConfigIssue(location=Location(file=display), key_path="",
                                      message=f"cannot read file: {exc}")) from None
    return parse_yaml(text, display=display, path=path)


def parse_yaml(text: str, *, display: str, path: Path | None = None) -> YamlDocument:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_syntax_issue(exc, text, display)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(ConfigIssue(location=Location(file=display), key_path="",
                                      message=f"YAML error: {exc}")) from None
    finally:
        loader.dispose()
    document = YamlDocument(path=path or Path(display), display=display, data=None)
    issues: list[ConfigIssue] = []
    if node is None:
        document.data = None
    else:
        builder = _Builder(loader, document, issues)
        document.data = builder.build(node, ())
    if issues:
        raise ConfigError(issues)
    return document


def _syntax_issue(exc: yaml.MarkedYAMLError, text: str, display: str) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 0
    column = mark.column + 1 if mark else 0
    problem = exc.problem or exc.context or "invalid YAML"
    return ConfigIssue(location=Location(file=display, line=line, column=column), key_path="",
                       message=f"YAML syntax error: {problem}", excerpt=_excerpt(text, line, column))


def _excerpt(text: str, line: int, column: int, around: int = 2) -> str:
    """Numbered source lines around ``line`` with a caret under ``column`` (dbt style)."""
    lines = text.splitlines()
    if not line or line > len(lines) + 1:
        return ""
    first, last = max(1, line - around), min(len(lines), line + around)
    width = len(str(last))
    out = []
    for number in range(first, last + 1):
        out.append(f"  {number:>{width}} | {lines[number - 1]}")
        if number == line:
            out.append(f"  {' ' * width} | {' ' * max(column - 1, 0)}^")
    return "\n".join(out)


class _Builder:
    """Turns a composed node tree into plain Python values, recording marks on the way."""

    def __init__(self, loader: _Loader, document: YamlDocument, issues: list[ConfigIssue]) -> None:
        self.loader = loader
        self.document = document
        self.issues = issues

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.document.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (index,)) for index, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[Any, Any]:
        self._check_duplicates(node, path)
        self.loader.flatten_mapping(node)  # resolves `<<` merge keys; later keys override
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                self._issue(key_node, path, "mapping keys must be plain scalars")
                continue
            key = key if isinstance(key, str) else str(key)
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
                self._issue(key_node, path + (key,),
                            f"duplicate key '{key}' (first defined at line {first.line + 1})",
                            hint="YAML keeps only the last value; remove one of them")
            else:
                seen[key] = key_node

    def _issue(self, node: yaml.Node, path: KeyPath, message: str, hint: str = "") -> None:
        location = Location(file=self.document.display, line=node.start_mark.line + 1,
                            column=node.start_mark.column + 1)
        self.issues.append(ConfigIssue(location=location, key_path=format_key_path(path),
                                       message=message, hint=hint))
