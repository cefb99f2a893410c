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
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, islice
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

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
        return _native_concat(self.root_render_func(context))


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
"""Longest string or list a template may build with ``*``, largest exponent with ``**``."""


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed (no attribute tricks, no mutation), strict (undefined names are errors), native."""

    code_generator_class = _CodeGenerator
    template_class = _Template
    concat = staticmethod(_native_concat)
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """``'x' * 10**9`` would exhaust memory while a config file is merely being validated."""
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 1000:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*" and _repeat_size(left, right) > MAX_REPEAT:
            raise SecurityError(f"a repeated string or list longer than {MAX_REPEAT} is not allowed")
        return super().call_binop(context, operator, left, right)

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.filters["int"] = _strict_int
        self.filters["float"] = _strict_float
        for name in ("cycler", "joiner", "lipsum", "namespace"):  # nothing a config value needs
            self.globals.pop(name, None)


def _repeat_size(left: Any, right: Any) -> int:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
            return len(sequence) * count
    return 0


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


def render_tree(environment: TemplateEnvironment, value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside a nested structure (used per request)."""
    if isinstance(value, str):
        return render(environment, value, context) if is_template(value) else value
    if isinstance(value, Mapping):
        return {key: render_tree(environment, item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_tree(environment, item, context) for item in value]
    return value
