"""The whitelist: which syntax an expression may use, checked node by node."""

from __future__ import annotations

import ast

from etrmflow.expr.functions import FUNCTIONS, Function
from etrmflow.expr.values import COMPARE, BinaryFn, ExpressionError, Fn

SYMBOLS = {ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
           ast.BitXor: "^", ast.BitAnd: "&", ast.Invert: "~"}
FORBIDDEN = {
    "Lambda": "lambda expressions", "ListComp": "comprehensions", "SetComp": "comprehensions",
    "DictComp": "comprehensions", "GeneratorExp": "generator expressions", "JoinedStr": "f-strings",
    "NamedExpr": "assignment expressions (:=)", "Dict": "dict literals", "Set": "set literals",
    "Starred": "starred arguments", "Await": "await expressions", "Yield": "yield expressions",
    "YieldFrom": "yield expressions", "Slice": "slices",
}


class Checker:
    """Checks the tree against the whitelist while a subclass builds closures from it.

    ``build`` dispatches on the node type to a ``_<NodeName>`` method of the subclass; a node
    type with no such method is not allowed.
    """

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.names: set[str] = set()

    def error(self, message: str, node: ast.AST) -> ExpressionError:
        return ExpressionError(message, getattr(node, "col_offset", -1) + 1 + self.offset)

    def build(self, node: ast.AST) -> Fn:
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is None:
            what = FORBIDDEN.get(type(node).__name__, f"{type(node).__name__} expressions")
            raise self.error(f"{what} are not allowed in an expression", node)
        return handler(node)

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
            pairs.append((COMPARE[type(op)], self.build(right)))
        return pairs

    def function(self, node: ast.Call) -> Function:
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
