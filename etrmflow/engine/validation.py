"""A contract's validators, built exactly as a run builds them, and the checking of its examples.

``build_validators`` turns a compiled contract into validators as ``runner.build_processor``
does (it should call this rather than repeat it): the ``json_schema`` and ``rules`` built-ins
are implied by a ``schema`` and ``rules``, then come the validators the contract lists. ``etrmflow test`` runs a contract's ``examples`` through these
same objects, so an example that passes there passes in a run.

An invalid example declares what must reject it in ``violates``. Each entry is a rule name
(``legs_sum_to_total``, or ``rule:legs_sum_to_total`` as dead letters spell it), or a JSON
Schema keyword (``format``), optionally pinned to a JSON pointer (``format@/counterparty_lei``;
``required@`` for the record itself). The example passes when every entry matches a violation
found and every violation found is matched by an entry.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from etrmflow.components import (
    ContractInfo,
    Kind,
    ValidationContext,
    Validator,
    Violation,
)
from etrmflow.errors import EtrmflowError
from etrmflow.plan import ComponentPlan, ContractPlan
from etrmflow.plugins import Registry

RULE_PREFIX = "rule:"
SCHEMA_KEYWORDS: frozenset[str] = frozenset(jsonschema.Draft202012Validator.VALIDATORS)
"""Every keyword a draft 2020-12 schema violation can carry."""

__all__ = [
    "RULE_PREFIX",
    "SCHEMA_KEYWORDS",
    "Expected",
    "Mismatch",
    "UnknownViolation",
    "build_component",
    "build_validators",
    "compare",
    "contract_info",
    "label",
    "parse_expected",
    "validate_records",
]


def build_component(registry: Registry, kind: Kind, component: ComponentPlan, **kwargs: Any) -> Any:
    """An instance of the registered class for ``component``; EtrmflowError if it cannot start."""
    cls = registry.get(kind, component.type)
    if cls is None:  # the checker rejects unknown types; this guards plans built by hand
        raise EtrmflowError(f"no {kind} type '{component.type}' is registered")
    try:
        return cls(component.options, **kwargs)
    except EtrmflowError:
        raise
    except (ValueError, TypeError, KeyError) as exc:  # options the schema could not rule out
        raise EtrmflowError(f"{kind} '{component.type}' cannot start with its options: {exc}") from exc


def contract_info(contract: ContractPlan) -> ContractInfo:
    return ContractInfo(name=contract.name, version=contract.version, primary_key=contract.primary_key,
                        schema=contract.schema)


def build_validators(contract: ContractPlan, registry: Registry, project_dir: str) -> list[Validator]:
    """The validators a run applies to ``contract``'s records, in the order it applies them."""
    context = ValidationContext(contract=contract_info(contract), project_dir=project_dir,
                                format_checkers=registry.format_checkers(), rules=contract.rules)
    listed = {c.type for c in contract.validators}
    implied = [ComponentPlan(type=name, options={}) for name, present in
               (("json_schema", bool(contract.schema)), ("rules", bool(contract.rules)))
               if present and name not in listed]  # listing a built-in again must not run it twice
    return [build_component(registry, Kind.VALIDATOR, c, context=context) for c in (*implied, *contract.validators)]


def validate_records(validators: Sequence[Validator], records: list[Any]) -> list[list[Violation]]:
    """Every violation of every record, validator by validator (as ``PageProcessor`` does)."""
    verdicts: list[list[Violation]] = [[] for _ in records]
    for validator in validators:
        # strict: a validator answering for fewer records must not let the others pass unchecked
        for found, extra in zip(verdicts, validator.validate(records), strict=True):
            found.extend(extra)
    return verdicts


# --- what an invalid example declares ------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    """One ``violates`` entry: a violation keyword, at one pointer or (``None``) at any."""

    text: str
    keyword: str
    pointer: str | None = None

    def matches(self, violation: Violation) -> bool:
        return violation.keyword == self.keyword and self.pointer in (None, violation.pointer)


class UnknownViolation(ValueError):
    """A ``violates`` entry that is neither a rule of the contract nor a JSON Schema keyword."""

    def __init__(self, name: str, message: str = "") -> None:
        super().__init__(message or f"'{name}' is neither a rule of this contract nor a JSON Schema keyword")
        self.name = name


def parse_expected(text: str, rules: Collection[str], *, open_vocabulary: bool = False) -> Expected:
    """Read a ``violates`` entry; ValueError says what is wrong with it.

    ``open_vocabulary``: accept any keyword, because a plugin validator may report its own.
    """
    name, at, pointer = text.partition("@")
    if at and pointer and not pointer.startswith("/"):
        raise ValueError(f"'{text}': the pointer after '@' must be empty or start with '/', "
                         f"e.g. format@/counterparty_lei")
    rule = name.removeprefix(RULE_PREFIX)
    if name.startswith(RULE_PREFIX) or name in rules:
        if rule not in rules:
            raise UnknownViolation(rule, f"this contract has no rule '{rule}'")
        if at:
            raise ValueError(f"'{text}': a rule judges the whole record; write '{rule}' without '@'")
        return Expected(text=text, keyword=RULE_PREFIX + rule)
    if name not in SCHEMA_KEYWORDS and not open_vocabulary:
        raise UnknownViolation(name)
    return Expected(text=text, keyword=name, pointer=pointer if at else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mismatch:
    """How an example's violations differ from what it declares."""

    missing: tuple[Expected, ...]
    """Declared, but no violation found matches them."""
    unexpected: tuple[Violation, ...]
    """Found, but no declared entry matches them."""


def compare(expected: Sequence[Expected], found: Sequence[Violation]) -> Mismatch | None:
    """None when ``found`` is exactly what ``expected`` declares (a valid example declares nothing)."""
    missing = tuple(entry for entry in expected if not any(entry.matches(v) for v in found))
    unexpected = tuple(v for v in found if not any(entry.matches(v) for entry in expected))
    return Mismatch(missing=missing, unexpected=unexpected) if missing or unexpected else None


def label(violation: Violation) -> str:
    """A violation as a ``violates`` entry names it: ``format@/counterparty_lei``, ``required``."""
    if violation.keyword.startswith(RULE_PREFIX):
        return violation.keyword.removeprefix(RULE_PREFIX)
    return f"{violation.keyword}@{violation.pointer}" if violation.pointer else violation.keyword
