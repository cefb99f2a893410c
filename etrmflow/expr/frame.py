"""The same checked tree over DataFrame columns (``Expression.evaluate_frame``)."""

from __future__ import annotations

import ast
import operator
from datetime import datetime
from typing import Any

from etrmflow.expr import exact_columns
from etrmflow.expr.functions import (
    FUNCTIONS,
    checked_ndigits,
    round_value,
    to_decimal,
    to_timestamp,
)
from etrmflow.expr.parse import SYMBOLS
from etrmflow.expr.record import RecordBuilder
from etrmflow.expr.values import (
    BINARY,
    COMPARE,
    MISSING,
    BinaryFn,
    Fn,
    field_of,
    is_present,
    item_of,
)


class FrameBuilder(RecordBuilder):
    """Builds closures over a DataFrame: names are columns, results are Series or scalars."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        import pandas as pd

        self.pd = pd

    def is_series(self, value: Any) -> bool:
        return isinstance(value, self.pd.Series)

    def truthy(self, value: Any) -> Any:
        """A bool Series (null counts as False), or the truth of a scalar."""
        if not self.is_series(value):
            return bool(value)
        if value.dtype == bool:
            return value
        if str(value.dtype) == "boolean":
            return value.fillna(False).astype(bool)
        isna = self.pd.isna
        return value.map(lambda v: bool(v) if isinstance(v, (str, list, tuple, dict))
                         else v is not MISSING and not isna(v) and bool(v)).astype(bool)

    def elementwise(self, inner: Fn, function: Fn) -> Fn:
        def run(frame: Any) -> Any:
            value = inner(frame)
            if not self.is_series(value):
                return function(value)
            return value.map(lambda v: None if (r := function(v)) is MISSING else r)
        return run

    def _BinOp(self, node: ast.BinOp) -> Fn:
        op = BINARY.get(type(node.op))
        if op is None:
            raise self.error(f"operator '{SYMBOLS[type(node.op)]}' is not allowed", node)
        left, right = self.build(node.left), self.build(node.right)

        symbol = type(node.op)

        def run(frame: Any) -> Any:
            a, b = left(frame), right(frame)
            if not (self.is_series(a) or self.is_series(b)):
                return op(a, b)
            found = exact_columns.involved(a, b)
            if found:
                return exact_columns.combine(op, a, b, None, found)
            return exact_columns.guarded(op, symbol, a, b)
        return run

    def _Name(self, node: ast.Name) -> Fn:
        name = self.identifier(node.id, node)
        self.names.add(name)
        return lambda frame: frame[name] if name in frame.columns else MISSING

    def _Attribute(self, node: ast.Attribute) -> Fn:
        attr = self.attribute(node)
        return self.elementwise(self.build(node.value), lambda v: field_of(v, attr))

    def _Subscript(self, node: ast.Subscript) -> Fn:
        key = self.subscript_key(node)
        return self.elementwise(self.build(node.value), lambda v: item_of(v, key))

    def _UnaryOp(self, node: ast.UnaryOp) -> Fn:
        if not isinstance(node.op, ast.Not):
            return super()._UnaryOp(node)
        operand = self.build(node.operand)

        def run(frame: Any) -> Any:
            value = self.truthy(operand(frame))
            return ~value if self.is_series(value) else not value
        return run

    def _BoolOp(self, node: ast.BoolOp) -> Fn:
        parts, is_and = [self.build(value) for value in node.values], isinstance(node.op, ast.And)
        combine = operator.and_ if is_and else operator.or_

        def run(frame: Any) -> Any:
            combined, value = None, None
            for part in parts:
                value = part(frame)
                if not self.is_series(value):
                    if bool(value) != is_and:  # a scalar that decides for every row
                        return bool(value)
                    continue
                value = self.truthy(value)
                combined = value if combined is None else combine(combined, value)
            return value if combined is None else combined
        return run

    def _Compare(self, node: ast.Compare) -> Fn:
        left, pairs = self.build(node.left), []
        for op, right_node, (_, right) in zip(node.ops, node.comparators,
                                              self.comparisons(node)):
            pairs.append((self.column_comparison(op, right_node, node), right))

        def run(frame: Any) -> Any:
            a, result = left(frame), None
            for compare, right in pairs:
                b = right(frame)
                value = compare(a, b)
                result = value if result is None else result & value
                a = b
            return result
        return run

    def column_comparison(self, op: ast.cmpop, right: ast.expr, node: ast.Compare) -> BinaryFn:
        scalar = COMPARE[type(op)]
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.List, ast.Tuple)):
                raise self.error("'in' on columns needs a list literal on the right", node)
            negate = isinstance(op, ast.NotIn)

            def member(a: Any, b: Any) -> Any:
                if not self.is_series(a):
                    return scalar(a, b)
                found = exact_columns.involved(a, None)
                if found:
                    return exact_columns.member(a, list(b), negate, scalar, found)
                return ~a.isin(b) if negate else a.isin(b)
            return member
        if isinstance(op, (ast.Is, ast.IsNot)):
            def is_none(a: Any, b: Any) -> Any:
                column = a if self.is_series(a) else b
                if not self.is_series(column):
                    return scalar(a, b)
                return column.isna() if isinstance(op, ast.Is) else column.notna()
            return is_none
        missing = isinstance(op, ast.NotEq)  # as pandas has it: NaN != x, and no other comparison

        def compare(a: Any, b: Any) -> Any:
            found = exact_columns.involved(a, b) if self.is_series(a) or self.is_series(b) else None
            return exact_columns.combine(scalar, a, b, missing, found) if found else scalar(a, b)
        return compare

    def _IfExp(self, node: ast.IfExp) -> Fn:
        test, body, orelse = self.build(node.test), self.build(node.body), self.build(node.orelse)

        def run(frame: Any) -> Any:
            condition = test(frame)
            if not self.is_series(condition):
                return body(frame) if condition else orelse(frame)
            chosen, other = body(frame), orelse(frame)
            if not self.is_series(chosen):
                chosen = self.pd.Series(None if chosen is MISSING else chosen, index=frame.index)
            return chosen.where(self.truthy(condition), None if other is MISSING else other)
        return run

    def _List(self, node: ast.List | ast.Tuple) -> Fn:
        if not all(isinstance(element, ast.Constant) for element in node.elts):
            raise self.error("list literals on columns may hold constants only", node)
        return super()._List(node)

    _Tuple = _List

    def _Call(self, node: ast.Call) -> Fn:
        spec, name = self.function(node), node.func.id  # type: ignore[attr-defined]
        if not spec.columns:
            supported = ", ".join(sorted(n for n, s in FUNCTIONS.items() if s.columns))
            raise self.error(f"function '{name}' is not supported on columns (supported: "
                             f"{supported})", node)
        vector, args = getattr(self, f"column_{name}"), [self.build(arg) for arg in node.args]

        def run(frame: Any) -> Any:
            values = [arg(frame) for arg in args]
            if any(self.is_series(value) for value in values):
                return vector(*values)
            return spec.function(*values)
        return run

    def column_abs(self, column: Any) -> Any:
        return column.abs()

    def column_round(self, column: Any, ndigits: Any = 0) -> Any:
        ndigits = checked_ndigits(ndigits)
        if column.dtype.kind in "iu" and ndigits >= 0 or column.dtype.kind == "f" and 0 <= ndigits <= 15:
            return column.round(ndigits)
        # numpy scales by 10**ndigits in floats and int64: beyond that range it answers NaN, inf
        # or a wrapped integer. Python's round is exact, and the one records get.
        return column.map(lambda value: round_value(value, ndigits), na_action="ignore")

    def column_present(self, column: Any) -> Any:
        return column.notna()

    def column_missing(self, column: Any) -> Any:
        return column.isna()

    def column_coalesce(self, *values: Any) -> Any:
        result = None
        for value in values:
            if not is_present(value):
                continue
            if result is None:
                result = value
            elif self.is_series(value):
                result = result.combine_first(value)
            else:
                result = result.fillna(value)
            if not self.is_series(result):
                break
        return result

    def column_lower(self, column: Any) -> Any:
        return column.str.lower()

    def column_upper(self, column: Any) -> Any:
        return column.str.upper()

    def column_len(self, column: Any) -> Any:
        return column.str.len()

    def column_str(self, column: Any) -> Any:
        return column.astype("str")

    def column_float(self, column: Any) -> Any:
        return column.astype("float64")

    def column_decimal(self, column: Any) -> Any:
        return column.map(to_decimal, na_action="ignore")

    def column_timestamp(self, column: Any) -> Any:
        if isinstance(column.dtype, self.pd.DatetimeTZDtype):
            return column.dt.tz_convert("UTC")
        if column.dtype.kind == "M":
            raise ValueError("timestamp() of naive datetimes: the UTC offset is unknown")
        # Parse each value with the same rules as a record (an offset is required) rather
        # than let pandas assume UTC for a naive string.
        return self.pd.to_datetime(column.map(_aware_timestamp, na_action="ignore"), utc=True)


def _aware_timestamp(value: Any) -> datetime:
    parsed = to_timestamp(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp() of a naive datetime {value!r}: the UTC offset is unknown")
    return parsed
