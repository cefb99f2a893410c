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
import warnings
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from etrmflow.expr.frame import FrameBuilder
from etrmflow.expr.functions import FUNCTIONS
from etrmflow.expr.record import RecordBuilder
from etrmflow.expr.values import (
    MISSING,
    RUNTIME_ERRORS,
    ExpressionError,
    Fn,
    NotApplicable,
)
from etrmflow.jsontext import JsonNumber


class Expression:
    """A compiled expression. Build with ``compile_expression``; immutable and thread-safe."""

    __slots__ = ("_frame_root", "_offset", "_root", "_tree", "names", "text")

    def __init__(self, text: str, tree: ast.Expression, offset: int) -> None:
        builder = RecordBuilder(offset)
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
        except RUNTIME_ERRORS as exc:
            raise NotApplicable(f"{self.text}: {exc}") from exc

    def check_frame_support(self) -> None:
        """Raise ExpressionError now if the expression cannot run on DataFrame columns."""
        if self._frame_root is None:
            try:
                self._frame_root = FrameBuilder(self._offset).build(self._tree.body)
            except (RecursionError, MemoryError):  # the column builder takes more frames a level
                raise ExpressionError("the expression is too deeply nested") from None

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
        except (*RUNTIME_ERRORS, AttributeError) as exc:
            absent = sorted(name for name in self.names if name not in frame.columns)
            hint = f" (columns not in the frame: {', '.join(absent)})" if absent else ""
            raise NotApplicable(f"{self.text}: {exc}{hint}") from exc


def _keep_long_literals(tree: ast.AST, source: str) -> None:
    """A literal with more digits than a double holds (``40.4500000000000001``) keeps its text,
    as a vendor's number does (``JsonNumber``): Python would read it as the double 40.45."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) is float:
            text = ast.get_source_segment(source, node)
            if text and _long_literal(text, node.value):
                node.value = JsonNumber(text.replace("_", ""))


def _long_literal(text: str, value: float) -> bool:
    """True when the literal ``text`` is not the shortest repr's decimal of its double."""
    try:
        return Decimal(text.replace("_", "")) != Decimal(repr(value))
    except ArithmeticError:  # not a plain literal (cannot happen for a float Constant's text)
        return False


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
        _keep_long_literals(tree, stripped)
        return Expression(text, tree, offset)
    except SyntaxError as exc:
        # Python gives offset 0 when the text ends too early: point just past the end.
        column = (exc.offset or len(stripped) + 1) + offset if exc.lineno == 1 else 0
        raise ExpressionError(f"invalid syntax: {exc.msg}", column) from None
    except (RecursionError, MemoryError):
        raise ExpressionError("the expression is too deeply nested") from None


__all__ = ["FUNCTIONS", "MISSING", "Expression", "ExpressionError", "NotApplicable",
           "compile_expression"]
