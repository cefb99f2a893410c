"""Component blocks (``{type: ..., options...}``): the type first, then the class's own schema.

Dispatching on ``type`` first means an error is about the component the user chose, never an
``anyOf`` dump over every component. Transforms and paginators are then built once, as the run
will build them: their constructors compile expressions and JSON paths, so a mistake there is a
config error now instead of a crash after the first pages were fetched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from etrmflow.components import Component, Kind
from etrmflow.config.check import check_against, did_you_mean, issue
from etrmflow.config.formats import expression_message
from etrmflow.config.yamlfile import KeyPath, YamlDocument, format_key_path
from etrmflow.errors import ConfigIssue
from etrmflow.plugins import Registry

BUILT_AT_VALIDATE = frozenset({Kind.TRANSFORM, Kind.PAGINATOR})
"""Kinds whose constructors are pure (documented in etrmflow.components): safe to build early."""


def check_component(document: YamlDocument, block: Any, path: KeyPath, kind: Kind, registry: Registry,
                    *, project_dir: str = ".") -> list[ConfigIssue]:
    """Issues of one component block found at ``path`` of ``document``."""
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        return []  # the document schema already reported the shape
    name = block["type"]
    cls = registry.get(kind, name)
    if cls is None:
        return [issue(document, path + ("type",), f"unknown {kind.value.replace('_', ' ')} type '{name}'",
                      hint=did_you_mean(name, registry.names(kind)))]
    options = {key: value for key, value in block.items() if key != "type"}
    issues = [_with_example(found, cls) for found in check_against(document, options, cls.options_schema, at=path)]
    if not issues and kind in BUILT_AT_VALIDATE:
        issues = _try_build(document, cls, options, path, kind, project_dir)
    return issues


def example(cls: type[Component]) -> str:
    """The component's YAML example when it fits on one line, else ''."""
    doc = cls.__doc__ or ""
    if "Example::" not in doc:
        return ""
    lines = [line.strip() for line in doc.split("Example::", 1)[1].strip("\n").splitlines()]
    block = lines[:lines.index("")] if "" in lines else lines
    return block[0].removeprefix("- ") if len(block) == 1 else ""


def _with_example(found: ConfigIssue, cls: type[Component]) -> ConfigIssue:
    sample = example(cls)
    if not sample or not found.message.startswith("missing required key"):
        return found
    return ConfigIssue(location=found.location, key_path=found.key_path, message=found.message,
                       hint=f"e.g. {sample}")


def _try_build(document: YamlDocument, cls: type[Component], options: dict[str, Any], path: KeyPath,
               kind: Kind, project_dir: str) -> list[ConfigIssue]:
    try:
        if kind is Kind.TRANSFORM:
            cls(options, project_dir=project_dir)  # type: ignore[call-arg]
        else:
            cls(options)
    except ValueError as exc:
        return [_build_issue(document, options, path, exc, cls)]
    return []


def _build_issue(document: YamlDocument, options: dict[str, Any], path: KeyPath, exc: ValueError,
                 cls: type[Component]) -> ConfigIssue:
    from etrmflow.expr import ExpressionError, compile_expression

    if isinstance(exc, ExpressionError):
        for where, text in _strings(options, path):
            try:
                compile_expression(text)
            except ExpressionError as found:
                if found.message == exc.message:
                    return ConfigIssue(location=document.locate_in_text(where, found.column),
                                       key_path=format_key_path(where),
                                       message=f"invalid expression {text!r}: {expression_message(found.message)}")
    return issue(document, path, f"invalid {cls.type_name} options: {exc}")


def _strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, path + (index,))
