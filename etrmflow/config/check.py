"""Schema checks that speak the user's language: every issue at once, each at file:line:col.

jsonschema's raw errors are written for schema authors ("Additional properties are not allowed
('pagniator' was unexpected)"). Here each becomes one issue per offending key, located at that
key, in YAML words (mapping, list), with a did-you-mean hint or the fix. Values in forms that
etrmflow parses itself (durations, JSON paths, expressions, time zones) are checked by the same
parser the run uses, so validate and run can never disagree.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, ValidationError

from etrmflow.config.formats import PARSED_PATTERNS, expression_message, option_format_checker
from etrmflow.config.yamlfile import KeyPath, YamlDocument, format_key_path
from etrmflow.errors import ConfigIssue

NAME_PATTERN = "^[a-z][a-z0-9_]*$"
_PATTERN_ADVICE = {
    NAME_PATTERN: "use lower-case letters, digits and underscores, starting with a letter",
    "^[A-Za-z_][A-Za-z0-9_]*$": "use letters, digits and underscores, not starting with a digit",
    "^[0-9]{3}(-[0-9]{3})?$": "write an HTTP status like 503, or a range like 520-524",
}
_YAML_TYPES = {"object": "mapping", "array": "list", "string": "string", "integer": "integer",
               "number": "number", "boolean": "boolean (true or false)", "null": "empty value"}


@cache
def document_schema(name: str) -> dict[str, Any]:
    """A packaged JSON Schema: connector, contract, pipeline or project."""
    text = resources.files("etrmflow.schemas").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def did_you_mean(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``did you mean 'x'?`` for a close candidate, else the short list of candidates, else ''."""
    options = sorted(set(candidates))
    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    if close:
        return f"did you mean '{close[0]}'?"
    if options and len(options) <= 12:
        return "expected one of: " + ", ".join(options)
    return ""


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    """``pattern``, except that forms etrmflow parses are checked by their parser (its message)."""
    if not isinstance(instance, str):
        return
    parse = PARSED_PATTERNS.get(pattern)
    if parse is None:
        if not re.search(pattern, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")
        return
    try:
        parse(instance)
    except ValueError as exc:
        yield ValidationError(str(exc))


_Validator = jsonschema.validators.extend(Draft202012Validator, {"pattern": _pattern})


def check_against(document: YamlDocument, value: Any, schema: Mapping[str, Any],
                  at: KeyPath = ()) -> list[ConfigIssue]:
    """Issues of ``value`` (found at key path ``at`` of ``document``) against ``schema``."""
    validator = _Validator(schema, format_checker=option_format_checker())
    issues: list[ConfigIssue] = []
    for error in validator.iter_errors(value):
        issues.extend(_translate(document, error, at))
    return issues


def _translate(document: YamlDocument, error: ValidationError, at: KeyPath) -> list[ConfigIssue]:
    path: KeyPath = at + tuple(error.absolute_path)
    keyword = error.validator
    if keyword == "additionalProperties" and isinstance(error.instance, Mapping):
        return _unknown_keys(document, error, path)
    if keyword == "required":
        return [_missing_key(document, error, path)]
    if keyword == "pattern" and "propertyNames" in error.schema_path:
        return [issue(document, path + (str(error.instance),), f"invalid name '{error.instance}'",
                      hint=_PATTERN_ADVICE.get(str(error.validator_value), ""), key=True)]
    if keyword == "enum":
        return [_enum(document, error, path)]
    if keyword in ("anyOf", "oneOf") and error.context:
        found = _alternatives(document, error, path, at)
        if found:
            return found
    column = getattr(error.cause, "column", 0) if keyword == "format" else 0
    if column:  # an expression error: point at the offending character
        return [ConfigIssue(location=document.locate_in_text(path, column), key_path=format_key_path(path),
                            message=message_for(error))]
    return [issue(document, path, message_for(error), hint=_type_hint(error, _raw(document.data, path)))]


def _alternatives(document: YamlDocument, error: ValidationError, path: KeyPath, at: KeyPath) -> list[ConfigIssue]:
    """``anyOf``: the problems of the alternative meant, else the types that would do."""
    branch = _branch_for(error)
    if branch:
        return [found for sub in branch for found in _translate(document, sub, at)]
    kinds = [kind for sub in error.context or () if sub.validator == "type" and not sub.relative_path
             for kind in _list(sub.validator_value)]
    if not kinds:
        return []
    expected = _or([_article(_YAML_TYPES.get(kind, kind)) for kind in dict.fromkeys(kinds)])
    return [issue(document, path, f"expected {expected}, got {describe(error.instance)}")]


def _branch_for(error: ValidationError) -> list[ValidationError]:
    """The errors of the alternative meant (its type fits the value), when exactly one fits."""
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context or ():
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [subs for subs in branches.values()
               if not any(sub.validator == "type" and not sub.relative_path for sub in subs)]
    return fitting[0] if len(fitting) == 1 else []


def _raw(data: Any, path: KeyPath) -> Any:
    """The value at ``path`` as written in the file, before rendering."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _type_hint(error: ValidationError, raw: Any) -> str:
    if error.validator != "type" or not isinstance(error.instance, str):
        return ""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if "type" in (schema.get("properties") or {}):  # ``paginator: cursor``: a block as its bare type
        return f"write {{type: {error.instance}}}, with the block's other keys inside the braces"
    expected = set(_list(error.validator_value))
    if not (isinstance(raw, str) and "{{" in raw):
        return ""
    if expected & {"integer", "number"}:
        return "a template gives a string unless it is one {{ }} holding a number: convert it, e.g. " \
               "{{ env_var('N') | int }}"
    if "boolean" in expected:
        return "a template gives a string here: compare it instead, e.g. {{ env_var('VERIFY', 'true') == 'true' }}"
    return ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def message_for(error: ValidationError) -> str:
    """One validation error in YAML words (without its location)."""
    keyword, expected, got = error.validator, error.validator_value, error.instance
    if keyword == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return f"expected {_article(_or([_YAML_TYPES.get(k, k) for k in kinds]))}, got {describe(got)}"
    if keyword == "pattern":
        if expected in PARSED_PATTERNS:
            return error.message
        advice = _PATTERN_ADVICE.get(str(expected), f"it must match the pattern {expected}")
        return f"invalid value {got!r}: {advice}"
    if keyword == "format":
        cause = expression_message(getattr(error.cause, "message", None) or str(error.cause or ""))
        if cause and repr(got) in cause:
            return cause
        return f"invalid {expected} {got!r}" + (f": {cause}" if cause else "")
    return _bounds(keyword, expected, got) or error.message


def _bounds(keyword: Any, limit: Any, got: Any) -> str:
    plural = "" if limit == 1 else "s"
    messages = {
        "minimum": f"must be at least {limit}, got {got}",
        "maximum": f"must be at most {limit}, got {got}",
        "exclusiveMinimum": f"must be greater than {limit}, got {got}",
        "exclusiveMaximum": f"must be less than {limit}, got {got}",
        "minItems": "must not be empty" if limit == 1 else f"must list at least {limit} items",
        "maxItems": f"must list at most {limit} item{plural}",
        "minProperties": "must not be empty" if limit == 1 else f"must have at least {limit} keys",
        "minLength": "must not be empty" if limit == 1 else f"must be at least {limit} characters long",
        "maxLength": f"must be at most {limit} character{plural} long",
        "uniqueItems": "lists the same item more than once",
    }
    return messages.get(str(keyword), "")


def _unknown_keys(document: YamlDocument, error: ValidationError, path: KeyPath) -> list[ConfigIssue]:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    known = list((schema.get("properties") or {}).keys())
    issues = []
    for key in error.instance:
        if key in known:
            continue
        hint = did_you_mean(str(key), [k for k in known if k != "type"] or known) if known else \
            "this block takes no other keys"
        issues.append(issue(document, path + (key,), f"unknown key '{key}'", hint=hint, key=True))
    return issues


def _missing_key(document: YamlDocument, error: ValidationError, path: KeyPath) -> ConfigIssue:
    missing = _quoted_name(error.message)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    described = ((schema.get("properties") or {}).get(missing) or {}).get("description", "")
    hint = f"{missing}: {described.rstrip('.')}" if described else ""
    return issue(document, path, f"missing required key '{missing}'", hint=hint)


def _enum(document: YamlDocument, error: ValidationError, path: KeyPath) -> ConfigIssue:
    choices = [str(choice) for choice in error.validator_value]
    got = error.instance
    hint = did_you_mean(str(got), choices) if isinstance(got, str) else ""
    shown = repr(got) if isinstance(got, str) else describe(got)
    return issue(document, path, f"must be one of: {', '.join(choices)}; got {shown}",
                 hint=hint if hint.startswith("did") else "")


def issue(document: YamlDocument, path: KeyPath, message: str, *, hint: str = "", key: bool = False) -> ConfigIssue:
    """A ConfigIssue at ``path`` of ``document`` (at its key when ``key``)."""
    return ConfigIssue(location=document.locate(path, key=key), key_path=format_key_path(path),
                       message=message, hint=hint)


def _quoted_name(message: str) -> str:
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1:end] if start >= 0 and end > start else message


def _article(text: str) -> str:
    return ("an " if text[:1] in "aeiou" else "a ") + text


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def describe(value: Any) -> str:
    """A value as YAML users know it: ``string 'high'``, ``a mapping``, ``true``, ``nothing``."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown if len(shown) < 60 else shown[:57] + '...'}"
