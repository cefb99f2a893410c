"""A small, safe expression language for contract rules and transform steps.

YAML authors write Python-looking expressions over a record's fields::

    rules:
      - name: delivery_order
        check: delivery_end > delivery_start
      - name: legs_sum_to_volume
        when: present(legs)
        check: abs(sum(legs.volume_mwh) - volume_mwh) <= 0.001

The text is parsed with ``ast`` and only a whitelist of node types is accepted; the tree is
then compiled once into Python closures (no ``eval`` of source), so evaluation is fast and
cannot reach Python objects: names and attributes read record fields, never attributes.

Semantics over a record (a mapping):

* a field absent from the record is ``MISSING`` (falsy; equal only to itself);
* ``a.b`` reads field ``b`` of mapping ``a``; on a list it projects over the items (the
  ``b`` of each item that has one); on anything else it is ``MISSING``;
* arithmetic, ordering, ``in`` and every function except ``present``, ``missing`` and
  ``coalesce``, given ``MISSING``, ``None`` or a value of the wrong type, raise
  ``NotApplicable``, as does a division by zero: the rule cannot be judged on that record;
* a float meeting a ``Decimal`` is converted through its shortest repr (``0.1`` ->
  ``Decimal("0.1")``) so money compares as written.

``Expression.evaluate_frame`` runs the same expression on DataFrame columns (for ``derive``
and ``filter`` steps): ``and``/``or``/``not`` become ``&``/``|``/``~`` and functions map to
their pandas forms where one exists.
"""

from __future__ import annotations

import ast
import functools
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from etrmflow.energy import parse_datetime_with_offset

Fn = Callable[[Any], Any]
BinaryFn = Callable[[Any, Any], Any]


class ExpressionError(ValueError):
    """An expression is malformed or uses something not allowed.

    ``column`` is 1-based (0 if unknown) and counts characters from the start of the
    expression text; ``path`` is where the expression sits, when known (``rules[2].check``).
    """

    def __init__(self, message: str, column: int = 0, *, path: str = "") -> None:
        text = f"{path}: {message}" if path else message
        super().__init__(f"{text} (column {column})" if column else text)
        self.message = message
        self.column = column
        self.path = path


class NotApplicable(Exception):
    """The expression cannot be judged on this record: a missing or null operand, a value of
    the wrong type, a division by zero. Rule validators skip the rule for that record."""


class _Missing:
    """The value of a field the record does not have. Falsy, and equal only to itself."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_RUNTIME_ERRORS = (TypeError, ValueError, ArithmeticError)


# ---------------------------------------------------------------------------------------------
# Values: field access, numeric coercion and guarded operators
# ---------------------------------------------------------------------------------------------

def _describe(value: Any) -> str:
    if value is MISSING:
        return "a missing field"
    return "null" if value is None else type(value).__name__


def _field(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, MISSING)
    if isinstance(value, (list, tuple)):
        return [item[key] for item in value if isinstance(item, Mapping) and key in item]
    return MISSING


def _item(value: Any, key: int | str) -> Any:
    if isinstance(key, int):
        if isinstance(value, (list, tuple)) and -len(value) <= key < len(value):
            return value[key]
        return MISSING
    return value.get(key, MISSING) if isinstance(value, Mapping) else MISSING


def _unify(a: Any, b: Any) -> tuple[Any, Any]:
    """Decimal meets float: the float becomes the Decimal of its shortest repr."""
    if type(a) is Decimal and type(b) is float:
        return a, Decimal(repr(b))
    if type(a) is float and type(b) is Decimal:
        return Decimal(repr(a)), b
    return a, b


def _numeric(op: BinaryFn) -> BinaryFn:
    def apply(a: Any, b: Any) -> Any:
        try:
            return op(a, b)
        except TypeError:
            return op(*_unify(a, b))
    return apply


def _ordered(op: BinaryFn) -> BinaryFn:
    def compare(a: Any, b: Any) -> Any:
        if type(a) is not type(b):
            a, b = _unify(a, b)
        return op(a, b)
    return compare


def _multiply(a: Any, b: Any) -> Any:
    # Sequence repetition has no use in a rule and "x" * 10**9 would exhaust memory.
    if isinstance(a, (str, list, tuple)) or isinstance(b, (str, list, tuple)):
        raise TypeError("'*' needs numbers")
    return a * b


def _modulo(a: Any, b: Any) -> Any:
    if isinstance(a, str):  # "%999999999d" % 1 is string formatting, not arithmetic
        raise TypeError("'%' needs numbers")
    return a % b


def _power(a: Any, b: Any) -> Any:
    # Exact integer powers grow without bound: (9 ** 4096) ** 4096 would run for minutes.
    if type(a) is int and type(b) is int and b > 0 and a.bit_length() * b > 1_000_000:
        raise OverflowError("exponent too large")
    return a ** b


_BINARY: dict[type, BinaryFn] = {
    ast.Add: _numeric(operator.add), ast.Sub: _numeric(operator.sub),
    ast.Mult: _numeric(_multiply), ast.Div: _numeric(operator.truediv),
    ast.FloorDiv: _numeric(operator.floordiv), ast.Mod: _numeric(_modulo),
    ast.Pow: _numeric(_power),
}
_COMPARE: dict[type, BinaryFn] = {
    ast.Eq: _ordered(operator.eq), ast.NotEq: _ordered(operator.ne),
    ast.Lt: _ordered(operator.lt), ast.LtE: _ordered(operator.le),
    ast.Gt: _ordered(operator.gt), ast.GtE: _ordered(operator.ge),
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    # A missing field "is None" too: `price is not None` must not pass for an absent price.
    ast.Is: lambda a, b: not _present(a) and not _present(b),
    ast.IsNot: lambda a, b: _present(a) or _present(b),
}
_SYMBOLS = {ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
            ast.BitXor: "^", ast.BitAnd: "&", ast.Invert: "~"}
_FORBIDDEN = {
    "Lambda": "lambda expressions", "ListComp": "comprehensions", "SetComp": "comprehensions",
    "DictComp": "comprehensions", "GeneratorExp": "generator expressions", "JoinedStr": "f-strings",
    "NamedExpr": "assignment expressions (:=)", "Dict": "dict literals", "Set": "set literals",
    "Starred": "starred arguments", "Await": "await expressions", "Yield": "yield expressions",
    "YieldFrom": "yield expressions", "Slice": "slices",
}


# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------

def _present(value: Any) -> bool:
    return value is not MISSING and value is not None


def _coalesce(*values: Any) -> Any:
    return next((value for value in values if _present(value)), None)


def _sequence(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        return value
    raise TypeError(f"{name}() needs a list, got {_describe(value)}")


def _sum(values: Any) -> Any:
    total: Any = 0
    for value in _sequence(values, "sum"):
        total = _BINARY[ast.Add](total, value)
    return total


def _extreme(pick: Callable[..., Any], name: str) -> Callable[..., Any]:
    def extreme(*values: Any) -> Any:
        return pick(_sequence(values[0], name) if len(values) == 1 else values)
    return extreme


def _len(value: Any) -> int:
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value)
    raise TypeError(f"len() needs a string or list, got {_describe(value)}")


def _round(value: Any, ndigits: Any = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"round() needs a number, got {_describe(value)}")
    return round(value) if ndigits is None else round(value, ndigits)


def _case(method: Callable[[str], str], name: str) -> Fn:
    def convert(value: Any) -> str:
        if isinstance(value, str):
            return method(value)
        raise TypeError(f"{name}() needs a string, got {_describe(value)}")
    return convert


def _present_value(value: Any, name: str) -> Any:
    if not _present(value):
        raise TypeError(f"{name}() of {_describe(value)}")
    return value


def _str(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(_present_value(value, "str"))


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("decimal() of a bool")
    return Decimal(str(_present_value(value, "decimal")))


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return parse_datetime_with_offset(value)
    raise TypeError(f"timestamp() needs a string or datetime, got {_describe(value)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Function:
    function: Callable[..., Any]
    min_args: int = 1
    max_args: int = 1
    columns: bool = True
    """False when the function has no vectorised form."""

    def arity(self) -> str:
        if self.min_args == self.max_args:
            return f"{self.min_args} argument{'s' if self.min_args > 1 else ''}"
        upper = "or more" if self.max_args > 99 else f"to {self.max_args}"
        return f"{self.min_args} {upper} arguments"


FUNCTIONS: dict[str, _Function] = {
    "abs": _Function(function=abs), "sum": _Function(function=_sum, columns=False),
    "min": _Function(function=_extreme(min, "min"), max_args=255, columns=False),
    "max": _Function(function=_extreme(max, "max"), max_args=255, columns=False),
    "len": _Function(function=_len), "round": _Function(function=_round, max_args=2),
    "present": _Function(function=_present),
    "missing": _Function(function=lambda value: not _present(value)),
    "coalesce": _Function(function=_coalesce, max_args=255),
    "lower": _Function(function=_case(str.lower, "lower")),
    "upper": _Function(function=_case(str.upper, "upper")),
    "str": _Function(function=_str), "int": _Function(function=int, columns=False),
    "float": _Function(function=float), "decimal": _Function(function=_decimal),
    "timestamp": _Function(function=_timestamp),
}
"""The functions an expression may call, by name."""


# ---------------------------------------------------------------------------------------------
# Compiling a checked tree into closures over one record
# ---------------------------------------------------------------------------------------------

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


class _Builder:
    """Checks the tree against the whitelist and builds closures over one record."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.names: set[str] = set()

    def error(self, message: str, node: ast.AST) -> ExpressionError:
        return ExpressionError(message, getattr(node, "col_offset", -1) + 1 + self.offset)

    def build(self, node: ast.AST) -> Fn:
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is None:
            what = _FORBIDDEN.get(type(node).__name__, f"{type(node).__name__} expressions")
            raise self.error(f"{what} are not allowed in an expression", node)
        return handler(node)

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
        return lambda record: _field(inner(record), attr)

    def _Subscript(self, node: ast.Subscript) -> Fn:
        inner, key = self.build(node.value), self.subscript_key(node)
        return lambda record: _item(inner(record), key)

    def _BinOp(self, node: ast.BinOp) -> Fn:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.error(f"operator '{_SYMBOLS[type(node.op)]}' is not allowed", node)
        left, right = self.build(node.left), self.build(node.right)
        return lambda record: op(left(record), right(record))

    def _UnaryOp(self, node: ast.UnaryOp) -> Fn:
        if isinstance(node.op, ast.Invert):
            raise self.error("operator '~' is not allowed (use 'not')", node)
        operand = self.build(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda record: not operand(record)
        op = operator.neg if isinstance(node.op, ast.USub) else operator.pos
        return lambda record: op(operand(record))

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

    def identifier(self, name: str, node: ast.AST) -> str:
        if name.startswith("__"):
            raise self.error(f"name '{name}' is not allowed (names starting with '__' are "
                             f"reserved)", node)
        return name

    def attribute(self, node: ast.Attribute) -> str:
        if node.attr.startswith("__"):
            column = (node.end_col_offset or 0) - len(node.attr) + 1 + self.offset
            raise ExpressionError(f"name '{node.attr}' is not allowed (names starting with '__' "
                                  f"are reserved)", column)
        return node.attr

    def subscript_key(self, node: ast.Subscript) -> int | str:
        key, sign = node.slice, 1
        if isinstance(key, ast.UnaryOp) and isinstance(key.op, ast.USub):
            key, sign = key.operand, -1
        if isinstance(key, ast.Constant) and not isinstance(key.value, bool):
            if isinstance(key.value, int):
                return sign * key.value
            if isinstance(key.value, str) and sign == 1:
                return key.value
        raise self.error("a subscript must be a constant index or key, e.g. legs[0] or "
                         "x['key']", node)

    def comparisons(self, node: ast.Compare) -> list[tuple[BinaryFn, Fn]]:
        operands, pairs = [node.left, *node.comparators], []
        for index, (op, right) in enumerate(zip(node.ops, node.comparators)):
            if isinstance(op, (ast.Is, ast.IsNot)) and not any(
                    isinstance(side, ast.Constant) and side.value is None
                    for side in operands[index:index + 2]):
                raise self.error("'is' and 'is not' are only allowed with None", node)
            pairs.append((_COMPARE[type(op)], self.build(right)))
        return pairs

    def function(self, node: ast.Call) -> _Function:
        if not isinstance(node.func, ast.Name):
            raise self.error("only calls of named functions are allowed (no method calls: "
                             "write lower(x), not x.lower())", node)
        name, args = node.func.id, node.args
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise self.error(f"function '{name}' is not allowed (allowed: "
                             f"{', '.join(sorted(FUNCTIONS))})", node)
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in args):
            raise self.error(f"function '{name}' takes positional arguments only", node)
        if not spec.min_args <= len(args) <= spec.max_args:
            raise self.error(f"{name}() takes {spec.arity()}, got {len(args)}", node)
        return spec


# ---------------------------------------------------------------------------------------------
# The same tree over DataFrame columns
# ---------------------------------------------------------------------------------------------

class _FrameBuilder(_Builder):
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

    def _Name(self, node: ast.Name) -> Fn:
        name = self.identifier(node.id, node)
        self.names.add(name)
        return lambda frame: frame[name] if name in frame.columns else MISSING

    def _Attribute(self, node: ast.Attribute) -> Fn:
        attr = self.attribute(node)
        return self.elementwise(self.build(node.value), lambda v: _field(v, attr))

    def _Subscript(self, node: ast.Subscript) -> Fn:
        key = self.subscript_key(node)
        return self.elementwise(self.build(node.value), lambda v: _item(v, key))

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
        scalar = _COMPARE[type(op)]
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.List, ast.Tuple)):
                raise self.error("'in' on columns needs a list literal on the right", node)
            negate = isinstance(op, ast.NotIn)
            return lambda a, b: ((~a.isin(b) if negate else a.isin(b))
                                 if self.is_series(a) else scalar(a, b))
        if isinstance(op, (ast.Is, ast.IsNot)):
            def is_none(a: Any, b: Any) -> Any:
                column = a if self.is_series(a) else b
                if not self.is_series(column):
                    return scalar(a, b)
                return column.isna() if isinstance(op, ast.Is) else column.notna()
            return is_none
        return scalar

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
        return column.round(ndigits)

    def column_present(self, column: Any) -> Any:
        return column.notna()

    def column_missing(self, column: Any) -> Any:
        return column.isna()

    def column_coalesce(self, *values: Any) -> Any:
        result = None
        for value in values:
            if not _present(value):
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
        return column.map(_decimal, na_action="ignore")

    def column_timestamp(self, column: Any) -> Any:
        if isinstance(column.dtype, self.pd.DatetimeTZDtype):
            return column.dt.tz_convert("UTC")
        if column.dtype.kind == "M":
            raise ValueError("timestamp() of naive datetimes: the UTC offset is unknown")
        # Parse each value with the same rules as a record (an offset is required) rather
        # than let pandas assume UTC for a naive string.
        return self.pd.to_datetime(column.map(_aware_timestamp, na_action="ignore"), utc=True)


def _aware_timestamp(value: Any) -> datetime:
    parsed = _timestamp(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp() of a naive datetime {value!r}: the UTC offset is unknown")
    return parsed


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

class Expression:
    """A compiled expression. Build with ``compile_expression``; immutable and thread-safe."""

    __slots__ = ("text", "names", "_tree", "_offset", "_root", "_frame_root")

    def __init__(self, text: str, tree: ast.Expression, offset: int) -> None:
        builder = _Builder(offset)
        self._root: Fn = builder.build(tree.body)
        self.text = text
        self.names: frozenset[str] = frozenset(builder.names)
        """Top-level field (or column) names the expression reads."""
        self._tree, self._offset = tree, offset
        self._frame_root: Fn | None = None

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        """The value over one record. Raises ``NotApplicable`` (see the module docstring)."""
        try:
            return self._root(record)
        except _RUNTIME_ERRORS as exc:
            raise NotApplicable(f"{self.text}: {exc}") from exc

    def check_frame_support(self) -> None:
        """Raise ExpressionError now if the expression cannot run on DataFrame columns."""
        if self._frame_root is None:
            self._frame_root = _FrameBuilder(self._offset).build(self._tree.body)

    def evaluate_frame(self, frame: Any) -> Any:
        """Vectorised evaluation over ``frame`` (a DataFrame; names are columns).

        Returns a Series, or a scalar when no column decides the result. Raises
        ``ExpressionError`` for functions with no vectorised form (sum, min, max, int) and
        ``NotApplicable`` when the columns cannot be combined (e.g. a column is absent).
        """
        self.check_frame_support()
        assert self._frame_root is not None
        try:
            return self._frame_root(frame)
        except (*_RUNTIME_ERRORS, AttributeError) as exc:
            absent = sorted(name for name in self.names if name not in frame.columns)
            hint = f" (columns not in the frame: {', '.join(absent)})" if absent else ""
            raise NotApplicable(f"{self.text}: {exc}{hint}") from exc


def compile_expression(text: str) -> Expression:
    """Parse and compile ``text``; raises ExpressionError with a 1-based column."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, got {type(text).__name__}")
    return _compile(text)


@functools.lru_cache(maxsize=2048)
def _compile(text: str) -> Expression:
    # Newlines become spaces so that a column is an offset into the whole (YAML block) text.
    source = text.replace("\r", " ").replace("\n", " ")
    stripped = source.lstrip()
    if not stripped.strip():
        raise ExpressionError("the expression is empty")
    offset = len(source) - len(stripped)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "is" with a literal: reported below
            tree = ast.parse(stripped, mode="eval")
        return Expression(text, tree, offset)
    except SyntaxError as exc:
        # Python gives offset 0 when the text ends too early: point just past the end.
        column = (exc.offset or len(stripped) + 1) + offset if exc.lineno == 1 else 0
        raise ExpressionError(f"invalid syntax: {exc.msg}", column) from None
    except (RecursionError, MemoryError):
        raise ExpressionError("the expression is too deeply nested") from None


__all__ = ["FUNCTIONS", "MISSING", "Expression", "ExpressionError", "NotApplicable",
           "compile_expression"]
