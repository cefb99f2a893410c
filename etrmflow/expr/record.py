"""Compiling a checked tree into closures over one record (a mapping)."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from etrmflow.expr.parse import SYMBOLS, Checker
from etrmflow.expr.values import BINARY, MISSING, BinaryFn, Fn, exact, field_of, item_of


def _call(function: Callable[..., Any], args: list[Fn]) -> Fn:
    if len(args) == 1:
        (only,) = args
        return lambda record: function(only(record))
    return lambda record: function(*[arg(record) for arg in args])


def _all_of(parts: list[Fn]) -> Fn:
    def run(record: Any) -> Any:
        value: Any = True
        for part in parts:
            value = part(record)
            if not value:
                return value
        return value
    return run


def _any_of(parts: list[Fn]) -> Fn:
    def run(record: Any) -> Any:
        value: Any = False
        for part in parts:
            value = part(record)
            if value:
                return value
        return value
    return run


def _chain(left: Fn, pairs: list[tuple[BinaryFn, Fn]]) -> Fn:
    def run(record: Any) -> Any:
        a, result = left(record), True
        for op, right in pairs:
            b = right(record)
            result = op(a, b)
            if not result:
                return result
            a = b
        return result
    return run


class RecordBuilder(Checker):
    """Builds closures over one record: names read fields, never Python attributes."""

    def _Constant(self, node: ast.Constant) -> Fn:
        value = node.value
        if not isinstance(value, (str, int, float, type(None))):
            raise self.error(f"constant {value!r} is not allowed", node)
        return lambda record: value

    def _Name(self, node: ast.Name) -> Fn:
        name = self.identifier(node.id, node)
        self.names.add(name)
        return lambda record: record.get(name, MISSING)

    def _Attribute(self, node: ast.Attribute) -> Fn:
        inner, attr = self.build(node.value), self.attribute(node)
        return lambda record: field_of(inner(record), attr)

    def _Subscript(self, node: ast.Subscript) -> Fn:
        inner, key = self.build(node.value), self.subscript_key(node)
        return lambda record: item_of(inner(record), key)

    def _BinOp(self, node: ast.BinOp) -> Fn:
        op = BINARY.get(type(node.op))
        if op is None:
            raise self.error(f"operator '{SYMBOLS[type(node.op)]}' is not allowed", node)
        left, right = self.build(node.left), self.build(node.right)
        return lambda record: op(left(record), right(record))

    def _UnaryOp(self, node: ast.UnaryOp) -> Fn:
        if isinstance(node.op, ast.Invert):
            raise self.error("operator '~' is not allowed (use 'not')", node)
        operand = self.build(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda record: not operand(record)
        op = operator.neg if isinstance(node.op, ast.USub) else operator.pos
        return lambda record: op(exact(operand(record)))  # -x of a long number: as sent

    def _BoolOp(self, node: ast.BoolOp) -> Fn:
        parts = [self.build(value) for value in node.values]
        return _all_of(parts) if isinstance(node.op, ast.And) else _any_of(parts)

    def _Compare(self, node: ast.Compare) -> Fn:
        left, pairs = self.build(node.left), self.comparisons(node)
        if len(pairs) == 1:
            op, right = pairs[0]
            return lambda record: op(left(record), right(record))
        return _chain(left, pairs)

    def _IfExp(self, node: ast.IfExp) -> Fn:
        test, body, orelse = self.build(node.test), self.build(node.body), self.build(node.orelse)
        return lambda record: body(record) if test(record) else orelse(record)

    def _List(self, node: ast.List | ast.Tuple) -> Fn:
        items = [self.build(element) for element in node.elts]
        if all(isinstance(element, ast.Constant) for element in node.elts):
            constant = [item(None) for item in items]
            return lambda record: constant
        return lambda record: [item(record) for item in items]

    _Tuple = _List

    def _Call(self, node: ast.Call) -> Fn:
        spec = self.function(node)
        return _call(spec.function, [self.build(arg) for arg in node.args])
