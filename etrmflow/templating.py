"""Sandboxed Jinja shared by load-time rendering (config) and request-time rendering (engine).

Rendering is *native*: a value that is exactly one ``{{ expression }}`` keeps the expression's
Python type (``{{ var('limit', 100) }}`` is the integer 100); anything with surrounding text is a
string. Strings are never re-parsed as Python literals (Jinja's own native mode would turn an
env var ``"0012"`` or a cursor ``"1e5"`` into numbers), so environment variables are always
strings: convert explicitly with ``| int``, which fails loudly instead of yielding 0.

Secrets never render to their value. ``{{ secret('ACME_CLIENT_SECRET') }}`` renders to the marker
``${secret:ACME_CLIENT_SECRET}``, which only the transport replaces, right before a request is
sent. So plans, logs and error messages can only ever show the marker.
"""

from __future__ import annotations

import re
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, islice
from typing import Any

from jinja2 import (
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    filters,
    meta,
    nodes,
)
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import pass_eval_context

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_MARKER = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")

REQUEST_TIME_NAMES = frozenset({"page", "cursor", "offset", "window"})
"""Names only known when a request is built; templates using them render per request.

The engine supplies them: ``page`` (1, 2, ...), ``offset`` (records fetched before this page),
``cursor`` (the paginator's cursor; None on the first page) and, in streams with ``windows:``,
``window`` (``window.start``, ``window.end``, ``window.index``, ``window.label``)."""

_NO_DEFAULT = object()


class MissingValue(Exception):
    """An env var, var or secret a template needs is not set and has no default."""

    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"{what} '{name}' is not set")
        self.what = what
        self.name = name


def _native_concat(values: Iterable[Any]) -> Any:
    head = list(islice(values, 2))
    if not head:
        return ""
    if len(head) == 1:
        if isinstance(head[0], Undefined):  # e.g. the sandbox's answer to ''.__class__: raise it
            str(head[0])
        return head[0]
    return "".join(str(value) for value in chain(head, values))


class _CodeGenerator(NativeCodeGenerator):
    """Native output without constant folding: Jinja folds ``{{ [1, 2] }}`` into the text
    ``"[1, 2]"`` at compile time and relies on ``literal_eval`` to get the list back, which
    would also turn every numeric-looking string into a number. Only literal text is folded."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> Any:
        if isinstance(node, nodes.TemplateData):
            return node.as_const(frame.eval_ctx)
        raise nodes.Impossible()


class _Template(NativeTemplate):
    def render(self, *args: Any, **kwargs: Any) -> Any:
        # self.environment, not NativeTemplate's environment_class, whose concat literal_evals.
        context = self.new_context(dict(*args, **kwargs))
        _BUDGET.left = MAX_BUILT
        try:
            return _native_concat(self.root_render_func(context))
        except (RecursionError, MemoryError):
            raise TemplateError("the template is nested too deeply or builds too much") from None


def _strict_int(value: Any, default: Any = _NO_DEFAULT, base: int = 10) -> int:
    """Jinja's ``int`` filter, except that a value that is not a whole number is an error, not 0."""
    try:
        if isinstance(value, str):
            try:
                return int(value.strip(), base)
            except ValueError:
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (ValueError, OverflowError):
        if default is not _NO_DEFAULT:
            return default
        raise TemplateError(f"int: {value!r} is not a whole number") from None


def _strict_float(value: Any, default: Any = _NO_DEFAULT) -> float:
    """Jinja's ``float`` filter, except that a value that is not a number is an error, not 0.0."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        return float(value)
    except ValueError:
        if default is not _NO_DEFAULT:
            return default
        raise TemplateError(f"float: {value!r} is not a number") from None


MAX_REPEAT = 100_000
"""Longest string or list one operation of a template may build (``*``, ``%``, ``join``,
``replace``, ``format``), largest exponent with ``**``."""
MAX_BUILT = 1_000_000
"""Most characters one rendering may build in all: ``map('replace', ...)`` repeats an operation."""
_MAX_INT_BITS = 100_000
_REFUSED_BLOCKS = (nodes.For, nodes.Macro, nodes.CallBlock)
"""Loops and macros: no configuration value needs them, and nested loops or a recursive macro
never finish (or exhaust the stack) while a file is merely being validated."""
_GROWING_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "translate"})
_DROPPED_FILTERS = ("batch", "slice", "center", "indent", "wordwrap")
"""Filters that pad or repeat text by a number they are given."""
_BUDGET = threading.local()


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed (no attribute tricks, no mutation), strict (undefined names are errors), native,
    and bounded: a template cannot loop, nor build more than ``MAX_BUILT`` characters."""

    code_generator_class = _CodeGenerator
    template_class = _Template
    concat = staticmethod(_native_concat)
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """``'x' * 10**9`` would exhaust memory while a config file is merely being validated."""
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 1000:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) \
                and left.bit_length() * right > _MAX_INT_BITS:
            raise SecurityError("the power is too large")
        if operator == "*" and isinstance(left, int) and isinstance(right, int) \
                and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise SecurityError("the product is too large")
        if operator == "*":
            _spend(_repeat_size(left, right), "a repeated string or list")
        if operator == "%" and isinstance(left, str):
            _check_widths(left)
        result = super().call_binop(context, operator, left, right)
        if operator == "%" and isinstance(result, str):
            _spend(len(result), "a formatted string")
        return result

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.filters["int"] = _strict_int
        self.filters["float"] = _strict_float
        self.filters.update(join=_join_filter, replace=_replace_filter, format=_format_filter,
                            round=_round_filter, tojson=_tojson_filter)
        for name in _DROPPED_FILTERS:
            self.filters.pop(name, None)
        for name in ("cycler", "joiner", "lipsum", "namespace"):  # nothing a config value needs
            self.globals.pop(name, None)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        try:
            tree = super()._parse(source, name, filename)
        except (RecursionError, MemoryError):
            raise TemplateSyntaxError("the template is nested too deeply", 1, name, filename) from None
        for node in tree.find_all(_REFUSED_BLOCKS):
            tag = {nodes.For: "for", nodes.Macro: "macro", nodes.CallBlock: "call"}[type(node)]
            raise TemplateSyntaxError(f"{{% {tag} %}} is not available in configuration templates "
                                      f"(no loops or macros)", node.lineno, name, filename)
        return tree

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _GROWING_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def refuse(*args: Any, **kwargs: Any) -> str:
            raise SecurityError("str.format is not available in templates: use ~ or the format filter")
        return refuse

    def getattr(self, obj: Any, attribute: str) -> Any:
        return _bounded_method(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _bounded_method(super().getitem(obj, argument))


def _repeat_size(left: Any, right: Any) -> int:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
            return len(sequence) * count
    return 0


# --- what a template may build -------------------------------------------------------------------

def _spend(size: int, what: str) -> None:
    """Count ``size`` characters (or items) against this rendering's budget, before building them."""
    if size > MAX_REPEAT:
        raise SecurityError(f"{what} longer than {MAX_REPEAT} is not allowed")
    left = getattr(_BUDGET, "left", MAX_BUILT) - size
    if left < 0:
        raise SecurityError(f"the template builds more than {MAX_BUILT} characters")
    _BUDGET.left = left


_WIDTH = re.compile(r"%[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")


def _check_widths(text: str) -> None:
    """``'%999999999d' % 1`` is a gigabyte of spaces: widths and precisions are bounded."""
    for width, precision in _WIDTH.findall(text):
        for number in (width, precision):
            if number == "*" or number and int(number) > MAX_REPEAT:
                raise SecurityError(f"a format width or precision above {MAX_REPEAT} is not allowed")


def _join(separator: str, items: Iterable[Any]) -> str:
    values = list(items)
    _spend(sum(len(str(value)) for value in values) + len(separator) * max(len(values) - 1, 0), "a joined string")
    return separator.join(values)


def _replace(text: str, old: str, new: str, count: int = -1) -> str:
    found = text.count(old) if old else len(text) + 1
    found = found if count is None or count < 0 else min(found, count)
    _spend(len(text) + found * max(len(new) - len(old), 0), "a replaced string")
    return text.replace(old, new, -1 if count is None else count)


_BOUNDED_METHODS = {"join": _join, "replace": _replace}


def _bounded_method(value: Any) -> Any:
    """``text.join(...)`` and ``text.replace(...)``, counted like the filters of those names."""
    owner = getattr(value, "__self__", None)
    if isinstance(value, types.BuiltinMethodType) and isinstance(owner, str) and value.__name__ in _BOUNDED_METHODS:
        bound = _BOUNDED_METHODS[value.__name__]
        return lambda *args: bound(owner, *args)
    return value


@pass_eval_context
def _join_filter(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    values = list(value)
    _spend(sum(len(str(item)) for item in values) + len(str(d)) * max(len(values) - 1, 0), "a joined string")
    return filters.do_join(eval_ctx, values, d, attribute)


@pass_eval_context
def _replace_filter(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> str:
    _replace(str(s), str(old), str(new), -1 if count is None else count)  # counts what it builds
    return filters.do_replace(eval_ctx, s, old, new, count)


def _format_filter(value: str, *args: Any, **kwargs: Any) -> str:
    _check_widths(str(value))
    result = filters.do_format(value, *args, **kwargs)
    _spend(len(result), "a formatted string")
    return result


def _round_filter(value: Any, precision: int = 0, method: str = "common") -> Any:
    if isinstance(precision, int) and abs(precision) > 4300:  # round(5, -10**8) computes 10**(10**8)
        raise SecurityError("round: precision too large")
    return filters.do_round(value, precision, method)  # type: ignore[arg-type]


@pass_eval_context
def _tojson_filter(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    if isinstance(indent, int) and indent > 16:
        raise SecurityError("tojson: indent above 16 is not allowed")
    result = filters.do_tojson(eval_ctx, value, indent)
    _spend(len(result), "a JSON text")
    return result


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def referenced_names(environment: TemplateEnvironment, source: str) -> set[str]:
    """Free variable names of a template (raises TemplateSyntaxError)."""
    return set(meta.find_undeclared_variables(environment.parse(source)))


def called_functions(environment: TemplateEnvironment, source: str) -> set[str]:
    tree = environment.parse(source)
    return {call.node.name for call in tree.find_all(nodes.Call) if isinstance(call.node, nodes.Name)}


def make_functions(*, vars: Mapping[str, Any], environ: Mapping[str, str],
                   secret_defaults: dict[str, str] | None = None) -> dict[str, Callable[..., Any]]:
    """The load-time functions ``env_var``, ``var`` and ``secret``."""

    def env_var(name: str, default: Any = _NO_DEFAULT) -> Any:
        if name in environ:
            return environ[name]
        if default is _NO_DEFAULT:
            raise MissingValue("environment variable", name)
        return default

    def var(name: str, default: Any = _NO_DEFAULT) -> Any:
        if name in vars:
            return vars[name]
        if default is _NO_DEFAULT:
            raise MissingValue("variable", name)
        return default

    def secret(name: str, default: str | None = None) -> str:
        if not SECRET_NAME.match(str(name)):
            raise TemplateError(f"secret name {name!r} must be a valid environment variable name")
        if default is not None and secret_defaults is not None:
            secret_defaults[name] = str(default)
        return "${secret:" + name + "}"

    return {"env_var": env_var, "var": var, "secret": secret}


def render(environment: TemplateEnvironment, source: str, context: Mapping[str, Any]) -> Any:
    """Render one template string. Raises jinja2.TemplateError or MissingValue."""
    return environment.from_string(source).render(context)


def render_tree(environment: TemplateEnvironment, value: Any, context: Mapping[str, Any],
                only: frozenset[str] | None = None) -> Any:
    """Render every template string inside a nested structure (used per request).

    ``only``: the template texts the configuration wrote (``template_texts`` of the stream).
    Any other string is text, even one that looks like a template: a request also carries what
    a vendor sent (a cursor, a next link), and ``{{ env_var('AWS_SECRET_ACCESS_KEY') }}`` from a
    vendor must be sent back as those characters, never rendered.
    """
    if isinstance(value, str):
        if not is_template(value) or only is not None and value not in only:
            return value
        return render(environment, value, context)
    if isinstance(value, Mapping):
        return {key: render_tree(environment, item, context, only) for key, item in value.items()}
    if isinstance(value, list):
        return [render_tree(environment, item, context, only) for item in value]
    return value


def template_texts(*values: Any) -> frozenset[str]:
    """Every template string inside ``values`` (nested mappings and lists): what ``only`` takes."""
    found: set[str] = set()
    for value in values:
        if isinstance(value, str):
            if is_template(value):
                found.add(value)
        elif isinstance(value, Mapping):
            found |= template_texts(*value.values())
        elif isinstance(value, (list, tuple)):
            found |= template_texts(*value)
    return frozenset(found)
