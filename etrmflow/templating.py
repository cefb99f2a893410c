"""Sandboxed Jinja shared by load-time rendering (config) and request-time rendering (engine).

Rendering is *native*: a value that is exactly one ``{{ expression }}`` keeps the expression's
Python type (``{{ var('limit', 100) }}`` is the integer 100); anything with surrounding text is a
string. Environment variables are always strings: convert explicitly with ``| int``.

Secrets never render to their value. ``{{ secret('ACME_CLIENT_SECRET') }}`` renders to the marker
``${secret:ACME_CLIENT_SECRET}``, which only the transport replaces, right before a request is
sent. So plans, logs and error messages can only ever show the marker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, islice
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_MARKER = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")

REQUEST_TIME_NAMES = frozenset({"window", "page", "cursor", "offset", "request"})
"""Names only known when a request is built; templates using them render per request."""

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
        return head[0]
    return "".join(str(value) for value in chain(head, values))


class _Template(NativeTemplate):
    def render(self, *args: Any, **kwargs: Any) -> Any:
        context = self.new_context(dict(*args, **kwargs))
        return self.environment_class.concat(self.root_render_func(context))  # type: ignore[attr-defined]


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed (no attribute tricks, no mutation), strict (undefined names are errors), native."""

    code_generator_class = NativeCodeGenerator
    template_class = _Template
    concat = staticmethod(_native_concat)

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


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
