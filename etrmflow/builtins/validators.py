"""Built-in validators: the contract's JSON Schema, and its cross-field rules.

Both are applied to every contract that declares a ``schema`` or ``rules``; each record gets
the violations of both, and a record with any violation goes to the dead-letter sink.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import jsonschema

from etrmflow import hookimpl
from etrmflow.components import ValidationContext, Validator, Violation
from etrmflow.energy import parse_datetime_with_offset
from etrmflow.expr import Expression, ExpressionError, NotApplicable, compile_expression
from etrmflow.validation.fastpath import FastCheck

MAX_MESSAGE_LENGTH = 300
_NO_OPTIONS: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}


def json_pointer(path: Iterable[Any]) -> str:
    """RFC 6901 pointer of a path of keys and indexes (``""`` for the whole record)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def truncate(message: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    return message if len(message) <= limit else message[:limit - 3] + "..."


def _strings_only(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    # The hookspec promises plugin checkers that they only ever see strings.
    return lambda value: not isinstance(value, str) or check(value)


def build_format_checker(checkers: Mapping[str, Callable[[Any], bool]]) -> jsonschema.FormatChecker:
    """jsonschema's format checker with every registered checker added (replacing its own)."""
    format_checker = jsonschema.FormatChecker()
    for name, check in checkers.items():
        format_checker.checks(name, raises=(ValueError,))(_strings_only(check))
    return format_checker


class JsonSchemaValidator(Validator):
    """Checks each record against the contract's JSON Schema (draft 2020-12), formats included.

    Applied to every contract that has a ``schema``; it takes no options and need not be
    listed under ``validators``. Each violation names the JSON pointer of the offending value
    and the schema keyword that failed::

        # contracts/trades.yml
        schema:
          type: object
          required: [trade_id, counterparty_lei]
          properties:
            counterparty_lei: {type: string, format: lei}
    """

    type_name = "json_schema"
    options_schema: ClassVar[dict[str, Any]] = _NO_OPTIONS

    def __init__(self, options: Mapping[str, Any], *, context: ValidationContext) -> None:
        super().__init__(options, context=context)
        schema = context.contract.schema
        jsonschema.Draft202012Validator.check_schema(schema)
        format_checker = build_format_checker(context.format_checkers)
        self._schema = jsonschema.Draft202012Validator(schema, format_checker=format_checker)
        self._fast = FastCheck(schema, format_checker, context.format_checkers)

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        is_valid = self._fast.is_valid
        # Detailed errors come from the reference jsonschema, and only failing records pay for them.
        return [[] if is_valid(record) else self.violations(record) for record in records]

    def violations(self, record: Any) -> list[Violation]:
        """Every schema error of one record, sorted by pointer then keyword, without repeats."""
        found = {(json_pointer(error.absolute_path), str(error.validator), truncate(error.message))
                 for error in self._schema.iter_errors(record)}
        return [Violation(pointer=pointer, keyword=keyword, message=message,
                          validator=self.type_name)
                for pointer, keyword, message in sorted(found)]


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledRule:
    """A contract rule ready to run: ``check`` must hold on records where ``when`` holds."""

    name: str
    check: Expression
    when: Expression | None
    violation: Violation
    names: frozenset[str]
    """Every field the rule reads."""


def _compile_part(rule: Mapping[str, Any], index: int, name: str, key: str) -> Expression:
    try:
        return compile_expression(rule[key])
    except ExpressionError as exc:
        raise ExpressionError(f"rule '{name}' {key}: {exc.message}", exc.column,
                              path=f"rules[{index}].{key}") from None


def compile_rule(index: int, rule: Mapping[str, Any]) -> CompiledRule:
    """Compile ``rules[index]``; raises ExpressionError naming the rule (``path`` says where)."""
    name = rule.get("name") if isinstance(rule, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ExpressionError("a rule needs a 'name'", path=f"rules[{index}]")
    if not isinstance(rule.get("check"), str):
        raise ExpressionError(f"rule '{name}' needs a 'check' expression", path=f"rules[{index}]")
    check = _compile_part(rule, index, name, "check")
    when = _compile_part(rule, index, name, "when") if rule.get("when") is not None else None
    message = rule.get("message") or f"rule '{name}' failed: {rule['check']}"
    violation = Violation(pointer="", keyword=f"rule:{name}", message=truncate(str(message)),
                          validator=RulesValidator.type_name)
    return CompiledRule(name=name, check=check, when=when, violation=violation,
                        names=check.names | (when.names if when else frozenset()))


@functools.lru_cache(maxsize=16384)
def _parse_instant(text: str) -> datetime | None:
    # Delivery periods repeat across records: parse each distinct string once.
    try:
        return parse_datetime_with_offset(text)
    except ValueError:
        return None


class RulesValidator(Validator):
    """Checks the contract's cross-field rules, written in etrmflow's expression language.

    A rule holds or the record is quarantined with ``keyword: rule:<name>``. ``when`` limits
    a rule to the records it applies to. A rule that cannot be judged on a record (a field is
    missing or null, or has the wrong type) is skipped: the schema reports those. Top-level
    ``format: date-time`` fields are compared as instants, so a delivery period that crosses
    a clock change compares correctly::

        # contracts/trades.yml
        rules:
          - name: delivery_order
            check: delivery_end > delivery_start
            message: delivery must end after it starts
          - name: notional_is_price_times_volume
            when: present(notional) and currency != 'GBX'
            check: abs(notional - price * volume_mwh) <= 0.01
    """

    type_name = "rules"
    options_schema: ClassVar[dict[str, Any]] = _NO_OPTIONS

    def __init__(self, options: Mapping[str, Any], *, context: ValidationContext) -> None:
        super().__init__(options, context=context)
        self.rules = tuple(compile_rule(index, rule) for index, rule in enumerate(context.rules))
        read = frozenset().union(*(rule.names for rule in self.rules))
        properties = context.contract.schema.get("properties") or {}
        self._instants = tuple(sorted(
            name for name, spec in properties.items()
            if name in read and isinstance(spec, Mapping) and spec.get("format") == "date-time"))

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        return [self.violations(record) for record in records]

    def violations(self, record: Any) -> list[Violation]:
        """The rules one record breaks, in the order the contract lists them."""
        if not isinstance(record, Mapping) or not self.rules:
            return []  # not an object: the json_schema validator reports it
        view, unparsed = self._with_instants(record)
        found = []
        for rule in self.rules:
            if unparsed and not rule.names.isdisjoint(unparsed):
                continue
            try:
                if rule.when is not None and not rule.when.evaluate(view):
                    continue
                if rule.check.evaluate(view):
                    continue
            except NotApplicable:
                continue
            found.append(rule.violation)
        return found

    def _with_instants(self, record: Mapping[str, Any]) -> tuple[Mapping[str, Any], set[str]]:
        """The record with its date-time fields parsed (a copy; the original stays as sent),
        and the fields that did not parse."""
        view: dict[str, Any] | None = None
        unparsed: set[str] = set()
        for name in self._instants:
            value = record.get(name)
            if not isinstance(value, str):
                continue
            parsed = _parse_instant(value)
            if parsed is None:
                unparsed.add(name)
                continue
            if view is None:
                view = dict(record)
            view[name] = parsed
        return (record if view is None else view), unparsed


@hookimpl
def etrmflow_validator_types() -> list[type]:
    """The json_schema and rules validators."""
    return [JsonSchemaValidator, RulesValidator]
