"""Rule expressions compiled to numpy over a batch, exact where they run, silent elsewhere.

The reference evaluates a rule on one record with Python closures (``etrmflow.expr``). Here a
rule's ``when`` or ``check`` becomes a function of a whole batch that returns its truth per
record *and* the records it may decide: those whose fields have the plain types the numpy
form assumes (a float for arithmetic, a parsed date-time for an instant, a str for text).
On those records the two agree exactly: float64 arithmetic and comparisons are Python's, no
operation can raise (division by zero is excluded), so short-circuiting changes nothing. Every
other record (a null, an int, a missing field, an unparsable date-time) is left to the
reference. An expression using syntax not listed below is not compiled at all.

Supported: numbers and strings as constants; fields; ``+ - * /``; unary ``- + not``;
comparisons (chained too) between two numbers, two instants or two strings; ``and``/``or``;
``abs``, ``str`` (of a string), ``present``/``missing`` (of a field) and ``sum(list.field)``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import numpy as np

from etrmflow.validation.rule_columns import NUM, Batch, Kind

Vector = Callable[[Batch], Any]
"""batch -> a numpy array (one value per record) or a Python scalar."""
Need = tuple[str, Kind]

_EXACT_INT = 2 ** 53
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}


class Unsupported(Exception):
    """The expression uses something the numpy form does not cover."""


class Compiled:
    """``truth(batch)``: (bool array of the expression's truth, bool array of the records on
    which that truth is exactly the reference's)."""

    def __init__(self, text: str, instants: frozenset[str]) -> None:
        source = text.replace("\r", " ").replace("\n", " ").strip()
        builder = _Builder(instants, source)
        self._root, kind = builder.build(ast.parse(source, mode="eval").body)
        if kind not in ("bool", NUM):
            raise Unsupported(f"a {kind} is not a condition")
        self._needs = frozenset(builder.needs)
        self._guards = tuple(builder.guards)

    def truth(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Call within ``np.errstate(all="ignore")``: inf and NaN are as Python makes them."""
        exact = batch.all_ok(self._needs)
        for guard in self._guards:
            exact = exact & guard(batch)
        return _as_truth(self._root(batch), batch.size), exact


def _as_truth(value: Any, size: int) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype == bool and value.shape == (size,):
        return value
    array = np.asarray(value)
    if array.dtype.kind == "f":
        array = array != 0  # a number's truth; NaN is true, as in Python
    return np.broadcast_to(array.astype(bool), (size,))


class _Builder:
    """Compiles a checked tree (etrmflow.expr's whitelist) into Vector functions."""

    def __init__(self, instants: frozenset[str], source: str) -> None:
        self.instants = instants
        self.source = source
        self.needs: set[Need] = set()
        self.guards: list[Vector] = []

    def build(self, node: ast.AST, want: Kind | None = None) -> tuple[Vector, Kind]:
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is None:
            raise Unsupported(type(node).__name__)
        function, kind = handler(node, want)
        if want is not None and kind != want:
            raise Unsupported(f"a {kind} where a {want} is needed")
        return function, kind

    def _Constant(self, node: ast.Constant, want: Kind | None) -> tuple[Vector, Kind]:
        value = node.value
        if isinstance(value, str):
            return (lambda batch: value), "str"
        if type(value) is float and _longer_than_a_double(ast.get_source_segment(self.source, node), value):
            raise Unsupported(f"{value!r}: the reference reads the literal by every digit")
        if type(value) is float or (type(value) is int and abs(value) <= _EXACT_INT):
            number = float(value)  # exact, and Python compares/combines it as this float
            return (lambda batch: number), NUM
        raise Unsupported(repr(value))

    def _Name(self, node: ast.Name, want: Kind | None) -> tuple[Vector, Kind]:
        name = node.id
        if want not in (None, NUM, "str", "instant"):  # a field as a condition: any value's truth
            raise Unsupported(f"field '{name}' as a {want}")
        kind: Kind = "instant" if name in self.instants else (want or NUM)
        self.needs.add((name, kind))
        return (lambda batch: batch.values(name, kind)), kind

    def _BinOp(self, node: ast.BinOp, want: Kind | None) -> tuple[Vector, Kind]:
        op = _ARITHMETIC.get(type(node.op))
        if op is None:
            raise Unsupported(type(node.op).__name__)
        (left, _), (right, _) = self.build(node.left, NUM), self.build(node.right, NUM)
        if isinstance(node.op, ast.Div):  # x / 0 raises in Python: the reference judges it
            self.guards.append(lambda batch: np.broadcast_to(np.asarray(right(batch)) != 0, (batch.size,)))
        return (lambda batch: op(left(batch), right(batch))), NUM

    def _UnaryOp(self, node: ast.UnaryOp, want: Kind | None) -> tuple[Vector, Kind]:
        if isinstance(node.op, ast.Not):
            operand, _ = self.build(node.operand, "bool")
            return (lambda batch: np.logical_not(operand(batch))), "bool"
        operand, _ = self.build(node.operand, NUM)
        op = operator.neg if isinstance(node.op, ast.USub) else operator.pos
        return (lambda batch: op(operand(batch))), NUM

    def _Compare(self, node: ast.Compare, want: Kind | None) -> tuple[Vector, Kind]:
        operands = [node.left, *node.comparators]
        kind = self._common_kind(operands)
        built = [self.build(operand, kind)[0] for operand in operands]
        if any(type(op) not in _COMPARE for op in node.ops):
            raise Unsupported("in, not in, is, is not")
        ops = [_COMPARE[type(op)] for op in node.ops]

        def compare(batch: Batch) -> Any:
            values = [operand(batch) for operand in built]
            result: Any = True
            for op, a, b in zip(ops, values, values[1:]):
                # str columns are object arrays: their comparisons come back as objects
                result = np.logical_and(result, np.asarray(op(a, b), dtype=bool))
            return result
        return compare, "bool"

    def _common_kind(self, operands: list[ast.expr]) -> Kind:
        if any(isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands):
            return "str"
        if any(isinstance(o, ast.Name) and o.id in self.instants for o in operands):
            return "instant"
        if any(isinstance(o, ast.Call) and getattr(o.func, "id", "") == "str" for o in operands):
            return "str"
        return NUM

    def _BoolOp(self, node: ast.BoolOp, want: Kind | None) -> tuple[Vector, Kind]:
        parts = [self.build(value, "bool")[0] for value in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

        def run(batch: Batch) -> Any:
            result = parts[0](batch)
            for part in parts[1:]:
                result = combine(result, part(batch))
            return result
        return run, "bool"

    def _Call(self, node: ast.Call, want: Kind | None) -> tuple[Vector, Kind]:
        name = getattr(node.func, "id", None)
        if name in ("present", "missing") and isinstance(node.args[0], ast.Name):
            field, present = node.args[0].id, name == "present"
            return (lambda batch: batch.present(field) if present else ~batch.present(field)), "bool"
        if name == "abs":
            operand, _ = self.build(node.args[0], NUM)
            return (lambda batch: np.abs(operand(batch))), NUM
        if name == "str":
            return self.build(node.args[0], "str")
        if name == "sum" and _is_projection(node.args[0]):
            field, attr = node.args[0].value.id, node.args[0].attr  # type: ignore[union-attr]
            kind: Kind = f"sum:{attr}"
            self.needs.add((field, kind))
            return (lambda batch: batch.values(field, kind)), NUM
        raise Unsupported(f"{name}()")


def _is_projection(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)


def _longer_than_a_double(text: str | None, value: float) -> bool:
    """A literal such as 40.4500000000000001, which the expression language keeps as written."""
    try:
        return text is None or Decimal(text.replace("_", "")) != Decimal(repr(value))
    except ArithmeticError:
        return True


def compile_vector(text: str, instants: Iterable[str]) -> Compiled | None:
    """The numpy form of an expression, or None if it has none."""
    try:
        return Compiled(text, frozenset(instants))
    except (Unsupported, SyntaxError, RecursionError, AttributeError, IndexError):
        return None
