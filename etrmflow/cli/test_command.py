"""``etrmflow test``: every contract's examples, through the validators a run would build.

A valid example must get no violation, an invalid one exactly the violations its ``violates``
lists (see ``etrmflow.engine.validation``). Exit 0 when every example behaves as declared, 1
when one does not, 2 when a contract (or a ``violates`` entry) is not valid configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import jsonschema

from etrmflow.cli.main import cli, parse_vars, registry
from etrmflow.compile import compile_contract
from etrmflow.components import Validator, Violation
from etrmflow.config.check import did_you_mean
from etrmflow.config.project import Loaded, Project, open_project_at
from etrmflow.config.settings import display_path, find_project_root
from etrmflow.config.yamlfile import KeyPath, format_key_path
from etrmflow.engine.validation import (
    RULE_PREFIX,
    SCHEMA_KEYWORDS,
    Expected,
    Mismatch,
    UnknownViolation,
    build_validators,
    compare,
    label,
    parse_expected,
    validate_records,
)
from etrmflow.errors import ConfigError, ConfigIssue, EtrmflowError, ExitCode, IssueCollector, Location
from etrmflow.plan import ContractPlan
from etrmflow.plugins import Registry

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# --- which contract files ------------------------------------------------------------------------

@dataclass(slots=True)
class _Projects:
    """One Project per project folder met, each with the ``--vars`` applied."""

    registry: Registry
    cli_vars: dict[str, Any]
    opened: dict[Path, Project]

    def around(self, path: Path) -> Project:
        root = find_project_root(path)
        if root is None or root not in self.opened:
            project = open_project_at(path, registry=self.registry, cli_vars=self.cli_vars)
            self.opened[project.root] = project
            return project
        return self.opened[root]


def _error(file: str, message: str, hint: str = "") -> ConfigError:
    return ConfigError(ConfigIssue(location=Location(file=file), key_path="", message=message, hint=hint))


def _resolve(argument: str, projects: _Projects) -> list[tuple[Project, Path]]:
    """A contract file, a folder of them, a project folder (its contracts/), or a contract name."""
    path = Path(argument)
    if path.is_file():
        return [(projects.around(path), path)]
    if path.is_dir():
        project = projects.around(path)
        folder = project.root / "contracts" if project.root == path.resolve() else path
        files = sorted(p for p in folder.glob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
        if not files:
            raise _error(display_path(folder), "no contract files (*.yml, *.yaml) in this folder")
        return [(project, file) for file in files]
    if _NAME.fullmatch(argument):
        project = projects.around(Path.cwd())
        found = project.find("contracts", argument)
        if found is None:
            raise _error(display_path(project.root / "contracts"), f"no contract named '{argument}'",
                         did_you_mean(argument, project.names("contracts")) or "there are no contract files yet")
        return [(project, found)]
    raise _error(argument, "no such contract file or folder",
                 "give contract files, contract names or project folders, e.g. contracts/trade.yml")


def _targets(arguments: Sequence[str], projects: _Projects) -> list[tuple[Project, Path]]:
    issues = IssueCollector()
    found: dict[Path, Project] = {}
    for argument in arguments or (".",):
        try:
            for project, path in _resolve(argument, projects):
                found.setdefault(path.resolve(), project)
        except ConfigError as exc:
            issues.extend(exc.issues)
    issues.raise_if_any()
    return [(project, path) for path, project in found.items()]


# --- a contract ready to test --------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class _Case:
    """A loaded contract, its validators, and what each of its examples must get."""

    loaded: Loaded
    plan: ContractPlan
    validators: list[Validator]
    examples: list[tuple[KeyPath, Any, tuple[Expected, ...]]]
    """(where, record, declared violations) per example, the valid ones first."""


def _prepare(project: Project, path: Path, issues: IssueCollector) -> _Case | None:
    result = project.load(path, "contract")
    issues.extend(result.issues)
    if result.issues or result.loaded is None:
        return None
    loaded = result.loaded
    plan = compile_contract(loaded)
    try:
        validators = build_validators(plan, project.registry, str(project.root))
    except (EtrmflowError, jsonschema.SchemaError) as exc:
        issues.add(loaded.document.locate(()), "", f"cannot build the contract's validators: {exc}")
        return None
    examples = _examples(loaded, [rule["name"] for rule in plan.rules], bool(plan.validators), issues)
    return _Case(loaded=loaded, plan=plan, validators=validators, examples=examples)


def _examples(loaded: Loaded, rules: list[str], plugins: bool,
              issues: IssueCollector) -> list[tuple[KeyPath, Any, tuple[Expected, ...]]]:
    block: Mapping[str, Any] = loaded.data.get("examples") or {}
    found: list[tuple[KeyPath, Any, tuple[Expected, ...]]] = [
        (("examples", "valid", index), record, ()) for index, record in enumerate(block.get("valid") or ())]
    for index, case in enumerate(block.get("invalid") or ()):
        where: KeyPath = ("examples", "invalid", index)
        declared = [_expected(loaded, (*where, "violates", n), text, rules, plugins, issues)
                    for n, text in enumerate(case["violates"])]
        found.append((where, case["record"], tuple(e for e in declared if e is not None)))
    return found


def _expected(loaded: Loaded, where: KeyPath, text: str, rules: list[str], plugins: bool,
              issues: IssueCollector) -> Expected | None:
    try:
        return parse_expected(text, rules, open_vocabulary=plugins)
    except UnknownViolation as exc:
        hint = _hint(exc.name, rules, rules_only=text.startswith(RULE_PREFIX))
        issues.add(loaded.document.locate(where), format_key_path(where), str(exc), hint)
    except ValueError as exc:
        issues.add(loaded.document.locate(where), format_key_path(where), str(exc))
    return None


def _hint(name: str, rules: list[str], *, rules_only: bool) -> str:
    close = did_you_mean(name, rules if rules_only else [*rules, *SCHEMA_KEYWORDS])
    if close.startswith("did"):
        return close
    known = f"the contract's rules are {', '.join(rules)}" if rules else "the contract has no rules"
    return known if rules_only else f"{known}; JSON Schema keywords include required, type, format, enum"


# --- running and reporting -----------------------------------------------------------------------

def _listing(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]" if items else "none"


def _failure(case: _Case, where: KeyPath, declared: tuple[Expected, ...], mismatch: Mismatch,
             found: list[Violation]) -> list[str]:
    wanted = _listing([e.text for e in declared]) if where[1] == "invalid" else "no violations"
    lines = [(f"  {case.loaded.document.locate(where)}: {format_key_path(where)}: expected {wanted}, "
             f"found {_listing([label(v) for v in found])}")]
    lines += [f"      not found: {entry.text}" for entry in mismatch.missing]
    lines += [f"      not expected: {label(v)}: {v.message}" for v in mismatch.unexpected]
    return lines


def _check(case: _Case) -> tuple[bool, list[str]]:
    """Whether every example behaves as declared, and the lines that say so."""
    name = f"{case.plan.name} v{case.plan.version}"
    if not case.examples:
        return True, [f"SKIP {name} (no examples)"]
    verdicts = validate_records(case.validators, [record for _, record, _ in case.examples])
    failures = [_failure(case, where, declared, mismatch, found)
                for (where, _, declared), found in zip(case.examples, verdicts, strict=True)
                if (mismatch := compare(declared, found)) is not None]
    valid = sum(1 for where, _, _ in case.examples if where[1] == "valid")
    counts = f"{valid} valid, {len(case.examples) - valid} invalid examples"
    if failures:
        details = [line for lines in failures for line in lines]
        return False, [f"FAIL {name} ({counts}; {len(failures)} failed)", *details]
    return True, [f"PASS {name} ({counts})"]


@cli.command(name="test")
@click.argument("targets", nargs=-1, metavar="[CONTRACT_OR_PROJECT]...")
@click.option("--vars", "vars_text", metavar="YAML",
              help="Variables for var() in the contracts, as YAML or JSON: '{max_price: 5000}'.")
def run_examples(targets: tuple[str, ...], vars_text: str | None) -> int:
    """Check that each contract's examples pass and fail as they declare; fetch nothing."""
    projects = _Projects(registry=registry(), cli_vars=parse_vars(vars_text), opened={})
    issues = IssueCollector()
    cases = [_prepare(project, path, issues) for project, path in _targets(targets, projects)]
    issues.raise_if_any()
    outcomes = [_check(case) for case in cases if case is not None]
    for _, lines in outcomes:
        click.echo("\n".join(lines))
    passed = sum(ok for ok, _ in outcomes)
    examples = sum(len(case.examples) for case in cases if case is not None)
    click.echo(f"Done. {passed} of {len(outcomes)} contract(s) passed; {examples} example(s) checked.")
    return ExitCode.OK if passed == len(outcomes) else ExitCode.RUN_FAILED
