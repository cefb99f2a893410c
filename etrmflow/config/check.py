"""Schema checks that speak the user's language: every issue at once, each at file:line:col.

jsonschema's raw errors are written for schema authors ("Additional properties are not allowed
('pagniator' was unexpected)"). Here each becomes one issue per offending key, located at that
key, with a did-you-mean hint. Component blocks are checked in two steps: first ``type`` against
the registered names, then the block against the schema of the class that ``type`` selects, so
an error is about the right component and never an ``anyOf`` dump.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from etrmflow.components import Kind
from etrmflow.config.yamlfile import KeyPath, YamlDocument, format_key_path
from etrmflow.errors import ConfigIssue
from etrmflow.plugins import Registry


@cache
def document_schema(name: str) -> dict[str, Any]:
    """A packaged JSON Schema: connector, contract, pipeline or project."""
    text = resources.files("etrmflow.schemas").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    options = sorted(set(candidates))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if options and len(options) <= 12:
        return "expected one of: " + ", ".join(options)
    return ""


def check_against(document: YamlDocument, value: Any, schema: Mapping[str, Any],
                  at: KeyPath = ()) -> list[ConfigIssue]:
    """Issues of ``value`` (found at key path ``at`` of ``document``) against ``schema``."""
    validator = Draft202012Validator(schema)
    issues: list[ConfigIssue] = []
    for error in validator.iter_errors(value):
        issues.extend(_translate(document, error, at))
    return issues


def _translate(document: YamlDocument, error: jsonschema.ValidationError, at: KeyPath) -> list[ConfigIssue]:
    path: KeyPath = at + tuple(error.absolute_path)
    keyword = error.validator
    if keyword == "additionalProperties" and isinstance(error.instance, Mapping):
        return _unknown_keys(document, error, path)
    if keyword == "required":
        missing = _quoted_name(error.message)
        return [_issue(document, path, f"missing required key '{missing}'", key=False)]
    if keyword == "type":
        expected = error.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else expected
        return [_issue(document, path, f"expected {_article(expected_text)}, got {_describe(error.instance)}")]
    if keyword == "enum":
        choices = [str(choice) for choice in error.validator_value]
        got = error.instance
        hint = did_you_mean(str(got), choices) if isinstance(got, str) else ""
        if not hint.startswith("did"):
            hint = ""
        return [_issue(document, path, f"must be one of {', '.join(choices)}; got {_describe(got)}", hint=hint)]
    if keyword == "pattern" and isinstance(error.instance, str):
        description = (error.schema or {}).get("description", "")
        return [_issue(document, path, f"invalid value {error.instance!r}" + (f": {description}" if description else
                                                                               f" (must match {error.validator_value})"))]
    if keyword == "propertyNames":
        return [_issue(document, path + (str(error.instance),), f"invalid name {error.instance!r}: "
                       "use lower-case letters, digits and underscores, starting with a letter", key=True)]
    return [_issue(document, path, error.message)]


def _unknown_keys(document: YamlDocument, error: jsonschema.ValidationError, path: KeyPath) -> list[ConfigIssue]:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    known = list((schema.get("properties") or {}).keys())
    issues = []
    for key in error.instance:
        if key in known:
            continue
        issues.append(_issue(document, path + (key,), f"unknown key '{key}'",
                             hint=did_you_mean(str(key), known), key=True))
    return issues


def _issue(document: YamlDocument, path: KeyPath, message: str, *, hint: str = "", key: bool = False) -> ConfigIssue:
    return ConfigIssue(location=document.locate(path, key=key), key_path=format_key_path(path),
                       message=message, hint=hint)


def _quoted_name(message: str) -> str:
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1:end] if start >= 0 and end > start else message


def _article(text: str) -> str:
    return ("an " if text[:1] in "aeiou" else "a ") + text


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
               dict: "mapping", type(None): "null"}


def _describe(value: Any) -> str:
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return _article(kind)
    shown = repr(value)
    return f"{kind} {shown if len(shown) < 60 else shown[:57] + '...'}"


def check_component(document: YamlDocument, block: Any, path: KeyPath, kind: Kind,
                    registry: Registry) -> list[ConfigIssue]:
    """Check a ``{type: ..., options...}`` block: the type first, then the class's own schema."""
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        return []  # the document schema already reported the shape
    name = block["type"]
    cls = registry.get(kind, name)
    if cls is None:
        return [_issue(document, path + ("type",), f"unknown {kind.value.replace('_', ' ')} type '{name}'",
                       hint=did_you_mean(name, registry.names(kind)))]
    options = {key: value for key, value in block.items() if key != "type"}
    return check_against(document, options, cls.options_schema, at=path)
