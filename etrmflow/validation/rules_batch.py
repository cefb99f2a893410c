"""A batch's rule violations, with the rules' numpy forms where they are exact.

For each rule, each record is decided by the numpy form (``when`` exactly false, or ``when``
and ``check`` both exact: ``rule_vectors``) or else by the reference (``broken``: the
per-record evaluation ``RulesValidator.violations`` uses). The reference also takes every rule
without a numpy form, every record that is not a dict, every record where a date-time field
the rule reads does not parse (the reference skips the rule there), and batches too small to
repay numpy's set-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from etrmflow.validation.instants import Instants
from etrmflow.validation.rule_columns import Batch
from etrmflow.validation.rule_vectors import compile_vector
from etrmflow.validation.verdicts import all_valid

SMALL_BATCH = 24
"""Below this many records the reference closures are faster than the numpy forms."""


class Rule(Protocol):
    name: str
    names: frozenset[str]
    violation: Any

    @property
    def check(self) -> Any: ...

    @property
    def when(self) -> Any: ...


class _Plan:
    """One rule's numpy forms; ``None`` parts are left to the reference."""

    def __init__(self, rule: Rule, instants: frozenset[str]) -> None:
        self.rule = rule
        self.instants = frozenset((name, "instant") for name in rule.names & instants)
        self.when = compile_vector(rule.when.text, instants) if rule.when is not None else None
        self.check = compile_vector(rule.check.text, instants)
        self.vectorised = rule.when is None or self.when is not None

    def split(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(broken, decided) per record of the batch."""
        holds, exact = self.check.truth(batch) if self.check is not None else (None, None)
        if self.when is not None:
            applies, decided = self.when.truth(batch)
        else:
            applies = decided = batch.all_ok(frozenset())  # all true
        decided = decided & batch.all_ok(self.instants)
        if holds is None or exact is None:
            broken, decided = np.zeros(batch.size, dtype=bool), decided & ~applies
        else:
            decided = decided & (~applies | exact)
            broken = decided & applies & ~holds
        # A date-time the rule reads that does not parse: the reference skips the rule.
        for name, _ in self.instants:
            skipped = batch.unparsed(name)
            broken, decided = broken & ~skipped, decided | skipped
        return broken, decided

class RulesBatch:
    """``violations(records)``: per record, the violations of the rules it breaks, in the
    order the rules are listed; ``broken(rule, record)`` is the reference for one record."""

    def __init__(self, rules: Sequence[Rule], instants: frozenset[str],
                 broken: Callable[[Any, Any], bool], full: Callable[[Any], list[Any]]) -> None:
        self._plans = [_Plan(rule, instants) for rule in rules]
        self._broken = broken
        self._full = full
        self._instants = Instants()

    @property
    def vectorised(self) -> list[str]:
        """Names of the rules with a numpy form (for the docs and tests)."""
        return [plan.rule.name for plan in self._plans if plan.vectorised and plan.check is not None]

    def violations(self, records: list[Any]) -> list[list[Any]]:
        out = all_valid(len(records))
        if not self._plans or not records:
            return out
        if len(records) < SMALL_BATCH:  # the closures cost less than numpy's set-up here
            return [self._full(record) or out[0] for record in records]
        if set(map(type, records)) == {dict}:
            rows, batch = range(len(records)), Batch(records, self._instants)
        else:
            rows = [i for i, record in enumerate(records) if type(record) is dict]
            for i, record in enumerate(records):
                if type(record) is not dict:
                    out[i] = self._full(record)
            batch = Batch([records[i] for i in rows], self._instants)
        with np.errstate(all="ignore"):  # inf and NaN as Python's floats make them
            for plan in self._plans:
                self._apply(plan, batch, rows, records, out)
        return out

    def _apply(self, plan: _Plan, batch: Batch, rows: Sequence[int], records: list[Any],
               out: list[list[Any]]) -> None:
        rule = plan.rule
        if not plan.vectorised:
            undecided = range(batch.size)
            broken: list[int] = []
        else:
            broken_mask, decided = plan.split(batch)
            broken = np.flatnonzero(broken_mask).tolist() if broken_mask.any() else []
            undecided = [] if decided.all() else np.flatnonzero(~decided).tolist()
        broken += [k for k in undecided if self._broken(rule, records[rows[k]])]
        for k in sorted(broken):
            row = rows[k]
            out[row] = [*out[row], rule.violation]  # rules in contract order; never the shared verdict
