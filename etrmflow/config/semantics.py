"""Checks beyond the document schemas: components, contract schemas, primary keys and rules.

Each catches a mistake that would otherwise surface only after data was fetched, or never: a
``format`` JSON Schema does not know is silently not checked, and a rule over a misspelt field
is silently skipped for every record. For settlement data both are wrong answers, not warnings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import timezone
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from etrmflow.components import Kind
from etrmflow.config.blocks import check_component
from etrmflow.config.check import did_you_mean, issue, message_for
from etrmflow.config.formats import expression_message
from etrmflow.config.yamlfile import KeyPath, YamlDocument, format_key_path
from etrmflow.errors import ConfigIssue
from etrmflow.plugins import Registry

_SIMPLE_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
_NOT_SCHEMAS = frozenset({"enum", "const", "default", "examples", "properties", "$defs", "definitions",
                          "patternProperties", "dependentSchemas"})
"""Keys whose values are data or maps of names, not schemas (the maps are walked by name)."""
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"})
_COMPOSED = ("allOf", "anyOf", "oneOf", "$ref", "patternProperties", "if", "dependentSchemas")


def check_connector_semantics(document: YamlDocument, data: dict[str, Any], registry: Registry) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    transport = data.get("type", "http")
    if registry.get(Kind.TRANSPORT, transport) is None:
        issues.append(issue(document, ("type",), f"unknown transport type '{transport}'",
                            hint=did_you_mean(transport, registry.names(Kind.TRANSPORT))))
    if "auth" in data:
        issues += check_component(document, data["auth"], ("auth",), Kind.AUTH, registry)
    issues += _check_response_rules(document, data.get("response_rules") or [], ("response_rules",))
    for name, stream in (data.get("streams") or {}).items():
        if isinstance(stream, Mapping) and "paginator" in stream:
            issues += check_component(document, stream["paginator"], ("streams", name, "paginator"),
                                      Kind.PAGINATOR, registry)
        if isinstance(stream, Mapping) and stream.get("windows"):
            issues += _check_windows(document, stream["windows"], ("streams", name, "windows"))
        if isinstance(stream, Mapping):
            issues += _check_response_rules(document, stream.get("response_rules") or [],
                                            ("streams", name, "response_rules"))
    return issues


_WINDOW_FORMATS = ("date", "datetime", "datetime_utc")


def _check_windows(document: YamlDocument, windows: Mapping[str, Any], path: KeyPath) -> list[ConfigIssue]:
    """The run splits the range with etrmflow.windows; the same parsers judge it here."""
    from zoneinfo import ZoneInfo

    from etrmflow.windows import parse_bound, parse_step

    issues: list[ConfigIssue] = []
    try:
        parse_step(windows["step"])
    except ValueError as exc:
        issues.append(issue(document, path + ("step",), str(exc)))
    zone = ZoneInfo(windows.get("tz", "UTC"))  # the schema's timezone format already checked it
    bounds = {}
    for key in ("start", "end"):
        try:
            bounds[key] = parse_bound(windows[key], zone).astimezone(timezone.utc)  # compare instants
        except ValueError as exc:
            issues.append(issue(document, path + (key,), f"{exc}", hint="e.g. 2025-01-01 or 2025-01-01T06:00:00+01:00"))
    if len(bounds) == 2 and bounds["end"] <= bounds["start"]:
        issues.append(issue(document, path + ("end",),
                            f"the end {windows['end']} is not after the start {windows['start']}"))
    fmt = windows.get("format", "date")
    if fmt not in _WINDOW_FORMATS and "%" not in fmt:
        hint = did_you_mean(fmt, _WINDOW_FORMATS)
        issues.append(issue(document, path + ("format",), f"unknown window format '{fmt}'",
                            hint=hint if hint.startswith("did") else
                            "use date, datetime, datetime_utc or a strftime pattern such as %Y%m%d"))
    return issues


def check_contract_semantics(document: YamlDocument, data: dict[str, Any], registry: Registry) -> list[ConfigIssue]:
    schema = data.get("schema") or {}
    issues = _check_json_schema(document, schema, registry)
    properties = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    issues += _check_primary_key(document, data.get("primary_key") or [], properties)
    issues += _check_rules(document, data.get("rules") or [], schema)
    for index, block in enumerate(data.get("validators") or []):
        issues += check_component(document, block, ("validators", index), Kind.VALIDATOR, registry)
    return issues


def _check_json_schema(document: YamlDocument, schema: dict[str, Any], registry: Registry) -> list[ConfigIssue]:
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=jsonschema.FormatChecker())
    issues = [_schema_issue(document, error) for error in meta.iter_errors(schema)]
    if issues:
        return issues
    known = set(jsonschema.FormatChecker().checkers) | set(registry.format_checkers())
    for path, node in _subschemas(schema, ("schema",)):
        issues += _check_format(document, path, node, known)
        issues += _check_ref(document, path, node, schema)
        issues += _check_decimal(document, path, node)
    return issues


def _check_decimal(document: YamlDocument, path: KeyPath, node: Mapping[str, Any]) -> list[ConfigIssue]:
    """The run checks money with this declaration: a malformed one must fail validate, not the run."""
    from etrmflow.validation.decimals import KEYWORD, spec_problem

    problem = spec_problem(node[KEYWORD]) if KEYWORD in node else None
    return [issue(document, path + (KEYWORD,), problem)] if problem else []


def _schema_issue(document: YamlDocument, error: jsonschema.ValidationError) -> ConfigIssue:
    path: KeyPath = ("schema", *error.absolute_path)
    if error.validator == "anyOf" and path[-1] == "type":
        given = error.instance if isinstance(error.instance, list) else [error.instance]
        wrong = next((str(kind) for kind in given if kind not in _SIMPLE_TYPES), str(error.instance))
        hint = did_you_mean(wrong, _SIMPLE_TYPES)
        return issue(document, path, f"'{wrong}' is not a JSON Schema type", hint=hint)
    if error.validator == "format" and error.validator_value == "regex":
        return issue(document, path, f"invalid regular expression {error.instance!r}: {error.cause}")
    return issue(document, path, f"not a valid JSON Schema: {message_for(error)}")


def _subschemas(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Every (sub)schema mapping in a JSON Schema, with its key path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from _subschemas(sub, path + (key, name))
        elif key not in _NOT_SCHEMAS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield from _subschemas(sub, path + (key, index))
        elif key not in _NOT_SCHEMAS:
            yield from _subschemas(value, path + (key,))


def _check_format(document: YamlDocument, path: KeyPath, node: dict[str, Any], known: set[str]) -> list[ConfigIssue]:
    name = node.get("format")
    if not isinstance(name, str) or name in known:
        return []
    close = did_you_mean(name, known, cutoff=0.8)
    hint = close if close.startswith("did") else "known formats: " + ", ".join(sorted(known))
    return [issue(document, path + ("format",), f"unknown format '{name}': no value would be checked against it",
                  hint=hint)]


def _check_ref(document: YamlDocument, path: KeyPath, node: dict[str, Any], root: dict[str, Any]) -> list[ConfigIssue]:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return []
    if not ref.startswith("#"):
        return [issue(document, path + ("$ref",), f"cannot use $ref '{ref}': a contract must be self-contained",
                      hint="put the definition under schema.$defs and refer to it as #/$defs/NAME")]
    target: Any = root
    for part in (p.replace("~1", "/").replace("~0", "~") for p in ref[1:].split("/") if p):
        if not isinstance(target, dict) or part not in target:
            names = sorted(root.get("$defs") or {})
            hint = did_you_mean(ref.rsplit("/", 1)[-1], names) if names else "define it under schema.$defs"
            return [issue(document, path + ("$ref",), f"$ref '{ref}' points to nothing in this schema", hint=hint)]
        target = target[part]
    return []


def _check_primary_key(document: YamlDocument, keys: Any, properties: Mapping[str, Any]) -> list[ConfigIssue]:
    issues = []
    for index, column in enumerate([keys] if isinstance(keys, str) else keys):
        if properties and column not in properties:
            where: KeyPath = ("primary_key",) if isinstance(keys, str) else ("primary_key", index)
            issues.append(issue(document, where, f"primary key column '{column}' is not a property of the schema",
                                hint=did_you_mean(column, properties)))
    return issues


def _check_rules(document: YamlDocument, rules: list[dict[str, Any]], schema: Mapping[str, Any]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    fields = _record_fields(schema)
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        name = rule.get("name")
        if name in seen:
            issues.append(issue(document, ("rules", index, "name"),
                                f"duplicate rule name '{name}', first used by rules[{seen[name]}]",
                                hint="violations name their rule: give each rule its own name"))
        seen.setdefault(name, index)
        for key in ("check", "when"):
            if key in rule:
                issues += _check_expression(document, ("rules", index, key), rule[key], fields)
    return issues


def _check_expression(document: YamlDocument, path: KeyPath, text: str, fields: _Fields) -> list[ConfigIssue]:
    from etrmflow.expr import ExpressionError, compile_expression

    try:
        names = compile_expression(text).names
    except ExpressionError as exc:
        return [ConfigIssue(location=document.locate_in_text(path, exc.column), key_path=format_key_path(path),
                            message=f"invalid expression: {expression_message(exc.message)}")]
    return [found for name in sorted(names) if (found := _unknown_field(document, path, text, name, fields))]


_Fields = tuple[set[str], bool] | None
"""The declared top-level fields of a record and whether others are forbidden; None if unclear."""


def _record_fields(schema: Mapping[str, Any]) -> _Fields:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties or any(key in schema for key in _COMPOSED):
        return None
    return set(properties), schema.get("additionalProperties") is False


def _unknown_field(document: YamlDocument, path: KeyPath, text: str, name: str, fields: _Fields) -> ConfigIssue | None:
    """A field the records cannot have, or (in an open schema) a near miss of a declared one."""
    if fields is None or name in fields[0]:
        return None
    hint = did_you_mean(name, fields[0])
    if not fields[1] and not hint.startswith("did"):
        return None  # an open schema lets records carry undeclared fields
    found = re.search(rf"(?<![\w.]){re.escape(name)}\b", text)
    return ConfigIssue(location=document.locate_in_text(path, found.start() + 1 if found else 0),
                       key_path=format_key_path(path), hint=hint,
                       message=f"unknown field '{name}': the schema has no such property, so this rule would "
                               f"never be checked")


def _check_response_rules(document: YamlDocument, rules: list[Any], at: KeyPath) -> list[ConfigIssue]:
    """A rule with neither a status nor a body path would silently match nothing."""
    return [issue(document, at + (index,), "a response rule needs a status, a path, or both",
                   hint="e.g. {status: 404, action: no_data} or {path: $.error, action: fail}")
            for index, rule in enumerate(rules)
            if isinstance(rule, dict) and "status" not in rule and "path" not in rule]

