"""Built-in validators: the contract's JSON Schema, and its cross-field rules.

Both are applied to every contract that declares a ``schema`` or ``rules``; each record gets
the violations of both, and a record with any violation goes to the dead-letter sink.

Each validates a batch at a time with the fast machinery of ``etrmflow.validation`` and keeps
a per-record reference (``violations``): plain jsonschema for the schema, the expression
language's closures for the rules. The two give the same verdicts and violations
(tests/test_validation_equivalence.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import jsonschema

from etrmflow import hookimpl
from etrmflow.builtins.formats import FORMAT_CHECKERS
from etrmflow.components import ValidationContext, Validator, Violation
from etrmflow.energy import parse_datetime_with_offset
from etrmflow.expr import Expression, ExpressionError, NotApplicable, compile_expression
from etrmflow.validation.accelerators import accelerators_for
from etrmflow.validation.rules_batch import RulesBatch
from etrmflow.validation.schema_batch import SchemaBatch, json_pointer
from etrmflow.validation.verdicts import all_valid

MAX_MESSAGE_LENGTH = 300
_SHARED_VIOLATIONS = 10_000
_NO_OPTIONS: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}


__all__ = ["CompiledRule", "JsonSchemaValidator", "RulesValidator", "build_format_checker", "compile_rule",
           "json_pointer", "truncate"]


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
        self._batch = SchemaBatch(schema, format_checker,
                                  accelerators_for(context.format_checkers, FORMAT_CHECKERS))
        self._made: dict[tuple[str, str, str], Violation] = {}

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        out = all_valid(len(records))
        for row, found in self._batch.violations(records).items():
            out[row] = self._as_violations(found)
        return out

    def violations(self, record: Any) -> list[Violation]:
        """Every schema error of one record by plain jsonschema (the reference), sorted by
        pointer then keyword, without repeats."""
        return self._as_violations(self._batch.reference_violations(record))

    def _as_violations(self, found: Sequence[tuple[str, str, str]]) -> list[Violation]:
        """``found`` is sorted and without repeats; truncating long messages may make some."""
        triples = [(pointer, keyword, truncate(message)) for pointer, keyword, message in found]
        return [self._violation(triple) for triple in (sorted(set(triples)) if len(triples) > 1 else triples)]

    def _violation(self, triple: tuple[str, str, str]) -> Violation:
        # Violations are immutable: records that fail alike share one (a missing price, say).
        violation = self._made.get(triple)
        if violation is None:
            if len(self._made) >= _SHARED_VIOLATIONS:
                self._made.clear()
            pointer, keyword, message = triple
            violation = self._made[triple] = Violation(pointer=pointer, keyword=keyword, message=message,
                                                       validator=self.type_name)
        return violation


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


def _breaks(rule: CompiledRule, view: Mapping[str, Any], unparsed: set[str]) -> bool:
    """Does the record (its date-times parsed) break the rule? A rule reading a date-time
    that did not parse, or that cannot be judged on the record, is not broken."""
    if unparsed and not rule.names.isdisjoint(unparsed):
        return False
    try:
        if rule.when is not None and not rule.when.evaluate(view):
            return False
        return not rule.check.evaluate(view)
    except NotApplicable:
        return False


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
        self._batch = RulesBatch(self.rules, frozenset(self._instants), self._broken, self.violations)

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        return self._batch.violations(records)

    def violations(self, record: Any) -> list[Violation]:
        """The rules one record breaks, in the order the contract lists them (the reference)."""
        if not isinstance(record, Mapping) or not self.rules:
            return []  # not an object: the json_schema validator reports it
        view, unparsed = self._with_instants(record)
        return [rule.violation for rule in self.rules if _breaks(rule, view, unparsed)]

    def _broken(self, rule: CompiledRule, record: Mapping[str, Any]) -> bool:
        view, unparsed = self._with_instants(record)
        return _breaks(rule, view, unparsed)

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
