"""Checks beyond the document schemas: component options, JSON paths, contract schemas, rules."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from etrmflow.components import Kind
from etrmflow.config.check import check_component
from etrmflow.config.yamlfile import KeyPath, YamlDocument, format_key_path
from etrmflow.errors import ConfigIssue
from etrmflow.jsonpath import JsonPathError, compile_path
from etrmflow.plugins import Registry


def _issue(document: YamlDocument, path: KeyPath, message: str, hint: str = "") -> ConfigIssue:
    return ConfigIssue(location=document.locate(path), key_path=format_key_path(path), message=message, hint=hint)


def check_connector_semantics(document: YamlDocument, data: dict[str, Any], registry: Registry) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    transport = data.get("type", "http")
    if registry.get(Kind.TRANSPORT, transport) is None:
        from etrmflow.config.check import did_you_mean
        issues.append(_issue(document, ("type",), f"unknown transport type '{transport}'",
                             did_you_mean(transport, registry.names(Kind.TRANSPORT))))
    if "auth" in data:
        issues += check_component(document, data["auth"], ("auth",), Kind.AUTH, registry)
    for name, stream in (data.get("streams") or {}).items():
        base: KeyPath = ("streams", name)
        if "paginator" in stream:
            issues += check_component(document, stream["paginator"], base + ("paginator",), Kind.PAGINATOR, registry)
        if "records" in stream:
            try:
                compile_path(stream["records"])
            except JsonPathError as exc:
                issues.append(_issue(document, base + ("records",), str(exc)))
    return issues


def check_contract_semantics(document: YamlDocument, data: dict[str, Any], registry: Registry) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    schema = data.get("schema") or {}
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = ("schema", *error.absolute_path)
        issues.append(_issue(document, where, f"not a valid JSON Schema: {error.message}"))
    properties = schema.get("properties") or {}
    keys = data.get("primary_key") or []
    for index, column in enumerate([keys] if isinstance(keys, str) else keys):
        if properties and column not in properties:
            issues.append(_issue(document, ("primary_key",) if isinstance(keys, str) else ("primary_key", index),
                                 f"primary key column '{column}' is not a property of the schema"))
    issues += _check_rules(document, data.get("rules") or [])
    for index, block in enumerate(data.get("validators") or []):
        issues += check_component(document, block, ("validators", index), Kind.VALIDATOR, registry)
    return issues


def _check_rules(document: YamlDocument, rules: list[dict[str, Any]]) -> list[ConfigIssue]:
    from etrmflow.expr import ExpressionError, compile_expression

    issues: list[ConfigIssue] = []
    for index, rule in enumerate(rules):
        for key in ("check", "when"):
            if key not in rule:
                continue
            try:
                compile_expression(rule[key])
            except ExpressionError as exc:
                issues.append(_issue(document, ("rules", index, key), f"invalid expression: {exc}"))
    return issues
