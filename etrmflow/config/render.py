"""Load-time rendering of Jinja inside parsed YAML values (never the raw text, as dbt does).

Strings that use request-time names (``page``, ``offset``, ``cursor``) are kept as templates for
the engine to render per request; they are test-rendered here with sample values so that a typo
still fails ``etrmflow validate`` with a location.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import SecurityError

from etrmflow.config.check import did_you_mean
from etrmflow.config.yamlfile import KeyPath, YamlDocument, format_key_path
from etrmflow.errors import ConfigIssue
from etrmflow.templating import (
    REQUEST_TIME_NAMES,
    SECRET_MARKER,
    MissingValue,
    TemplateEnvironment,
    is_template,
    make_functions,
    referenced_names,
    render,
)

SAMPLE_REQUEST_CONTEXT: dict[str, Any] = {
    "page": 1, "offset": 0, "cursor": "sample-cursor",
    "window": {"index": 0, "label": "2025-01-01T00:00:00+00:00/2025-01-08T00:00:00+00:00",
               "start": "2025-01-01", "end": "2025-01-08"},
}

REQUEST_TIME_KEYS = frozenset({"params", "headers", "body", "path"})
"""Keys of a stream under which request-time templates are allowed."""

_FUNCTIONS = ("env_var", "var", "secret")
_PLAIN_TYPES = (str, int, float, bool, type(None), list, dict)
_AVAILABLE = ("available: env_var(), var(), secret(); in a stream's params, headers, body or path also "
              + ", ".join(sorted(REQUEST_TIME_NAMES)))
_NO_ATTRIBUTE = re.compile(r"^'(?P<owner>.+)' has no attribute '(?P<name>.+)'$")
_UNSAFE = re.compile(r"^access to attribute '(?P<name>[^']+)' of .* is unsafe")
_IS_UNDEFINED = re.compile(r"^'(?P<name>[^']+)' is undefined$")


@dataclass(slots=True)
class RenderContext:
    vars: Mapping[str, Any]
    environ: Mapping[str, str]
    secret_defaults: dict[str, str] = field(default_factory=dict)
    environment: TemplateEnvironment = field(default_factory=TemplateEnvironment)

    def functions(self) -> dict[str, Any]:
        return make_functions(vars=self.vars, environ=self.environ, secret_defaults=self.secret_defaults)


def render_document(document: YamlDocument, context: RenderContext) -> tuple[Any, list[ConfigIssue]]:
    """The document's data with load-time templates rendered, and every problem found.

    A value whose template failed is left as its template text; callers should not report
    further problems at or below the key path of a rendering issue.
    """
    issues: list[ConfigIssue] = []
    renderer = _Renderer(document, context, issues)
    return renderer.walk(document.data, ()), issues


def request_time_allowed(path: KeyPath) -> bool:
    """Whether the value at ``path`` is rendered per request by the engine."""
    if path[:1] in (("params",), ("headers",)):  # connector-wide, merged into every request
        return True
    if len(path) >= 3 and path[0] == "streams" and path[2] in REQUEST_TIME_KEYS:
        return True
    return path[:2] == ("source", "params")


SINK_SECRET_OPTIONS = frozenset({"dsn", "password"})
"""Sink options whose secret markers the sink resolves when it connects (the postgres sink)."""
_PASSWORD_HINT = "write {{ secret('NAME') }} in its place, or leave it out and let libpq read PGPASSWORD or ~/.pgpass"
_WRITTEN = "written in the pipeline (or rendered by env_var() when the files load), so it would be copied into " \
           "target/plan.json"
_CONNINFO_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def dsn_password(dsn: str) -> str | None:
    """The password a connection string holds (a URI's ``user:password@`` or ``?password=``, or
    libpq's ``password=``), as written; None if it has none."""
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            return userinfo.split(":", 1)[1]
        found = urllib.parse.parse_qs(parts.query).get("password")
        return found[0] if found else None
    found = _CONNINFO_PASSWORD.search(dsn)
    return found[1].strip("'") if found else None


def secret_allowed(path: KeyPath) -> bool:
    """Whether the engine resolves secret markers in the value at ``path`` (a request part,
    or a sink's connection options)."""
    if len(path) == 3 and path[0] == "sinks" and path[2] in SINK_SECRET_OPTIONS:
        return True
    return path[:1] in (("auth",), ("base_url",)) or request_time_allowed(path)


class _Renderer:
    def __init__(self, document: YamlDocument, context: RenderContext, issues: list[ConfigIssue]) -> None:
        self.document = document
        self.context = context
        self.issues = issues
        self.functions = context.functions()

    def walk(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return {key: self.walk(item, path + (key,)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.walk(item, path + (index,)) for index, item in enumerate(value)]
        if len(path) == 3 and path[0] == "sinks" and path[2] in SINK_SECRET_OPTIONS:
            return self._connection_option(value, path)
        if path[-1:] == ("base_url",):
            return self._base_url(value, path)
        if is_template(value):
            return self.render_string(value, path)
        return value

    def _connection_option(self, value: Any, path: KeyPath) -> Any:
        """A sink's ``dsn`` or ``password``: rendered, and refused if it holds a password that is
        not a secret() marker (load-time values are copied into target/plan.json)."""
        before = len(self.issues)
        rendered = self.render_string(value, path) if is_template(value) else value
        if len(self.issues) > before or not isinstance(rendered, str):
            return rendered
        password = rendered if path[2] == "password" else dsn_password(rendered)
        if password and not SECRET_MARKER.fullmatch(password):
            where = "the password in the dsn" if path[2] == "dsn" else "the password"
            self._add(path, f"{where} is {_WRITTEN}", hint=_PASSWORD_HINT)
        return rendered

    def _base_url(self, value: Any, path: KeyPath) -> Any:
        """A ``base_url`` holding ``user:password@`` (aiohttp sends it as Basic auth): refused
        unless the password is a secret() marker, as a sink's dsn is."""
        before = len(self.issues)
        rendered = self.render_string(value, path) if is_template(value) else value
        if len(self.issues) > before or not isinstance(rendered, str) or "://" not in rendered:
            return rendered
        userinfo, at, _ = urllib.parse.urlsplit(rendered).netloc.rpartition("@")
        password = userinfo.partition(":")[2] if at else ""
        if password and not SECRET_MARKER.fullmatch(urllib.parse.unquote(password)):
            self._add(path, "the password in base_url is written in the file (or rendered by env_var() when the files "
                            "load), so it would be copied into target/plan.json and the fetch plan shown by compile",
                      hint="use auth: {type: basic, username: ..., password: \"{{ secret('NAME') }}\"}, or write "
                           "{{ secret('NAME') }} in its place")
        return rendered

    def render_string(self, source: str, path: KeyPath) -> Any:
        try:
            return self._render(source, path)
        except MissingValue as exc:
            self._missing(exc, path)
        except TemplateSyntaxError as exc:
            self._add(path, f"template syntax error: {exc.message}",
                      hint="check the {{ }} and {% %} delimiters, brackets and quotes")
        except UndefinedError as exc:
            self._undefined(exc, source, path)
        except SecurityError as exc:
            unsafe = _UNSAFE.match(str(exc))
            what = f"Python internals such as '{unsafe['name']}'" if unsafe else str(exc).rstrip(".")
            self._add(path, f"template not allowed: {what}",
                      hint="templates only read values: env_var(), var(), secret() and filters")
        except TemplateError as exc:
            self._add(path, f"template error: {exc}")
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            self._add(path, f"template error: {type(exc).__name__}: {exc}")
        return source

    def _render(self, source: str, path: KeyPath) -> Any:
        environment = self.context.environment
        request_names = referenced_names(environment, source) & REQUEST_TIME_NAMES
        if request_names:
            if not request_time_allowed(path):
                self._misplaced(path, request_names)
                return source
            if "window" in request_names and not self._has_windows(path):
                self._add(path, "'window' is only set in streams with a windows: block",
                          hint="add windows: {start: ..., end: ..., step: P1D} to this stream")
                return source
            self._check_result(render(environment, source, {**self.functions, **SAMPLE_REQUEST_CONTEXT}),
                               source, path)
            return source
        return self._check_result(render(environment, source, self.functions), source, path)

    def _check_result(self, value: Any, source: str, path: KeyPath) -> Any:
        if not isinstance(value, _PLAIN_TYPES):
            name = getattr(value, "__name__", type(value).__name__)
            hint = f"call it: {name}('NAME')" if name in _FUNCTIONS else ""
            self._add(path, f"template gives {name!r}, which is not a value", hint=hint)
            return source
        if SECRET_MARKER.search(str(value)) and not secret_allowed(path):
            self._add(path, "secret() is only resolved in what a request sends: here its marker text would be "
                            "used as it is", hint="use secret() in auth, base_url, headers, params, path or body")
            return source
        if not _secrets_intact(self.context.environment, source, value):
            self._add(path, "secret() must be used as it is: a filter, slice or arithmetic would change "
                            "the credential sent", hint="write {{ secret('NAME') }} alone or inside a string")
            return source
        return value

    def _has_windows(self, path: KeyPath) -> bool:
        """Whether the stream at ``path`` declares windows (a pipeline's source: checked later)."""
        if path[:1] != ("streams",) or len(path) < 2:
            return True
        streams = self.document.data.get("streams")
        stream = streams.get(path[1]) if isinstance(streams, dict) else None
        return not isinstance(stream, dict) or bool(stream.get("windows"))

    def _misplaced(self, path: KeyPath, names: set[str]) -> None:
        listed = ", ".join(f"'{name}'" for name in sorted(names))
        plural = "s" if len(names) > 1 else ""
        self._add(path, f"request-time variable{plural} {listed} cannot be used here: only a stream's params, "
                        f"headers, body or path (or a pipeline's source.params) are rendered per request")

    def _missing(self, exc: MissingValue, path: KeyPath) -> None:
        if exc.what == "environment variable":
            hint = f"export {exc.name}=... or give a default: env_var('{exc.name}', 'value')"
        else:
            close = did_you_mean(exc.name, list(self.context.vars))
            hint = close if close.startswith("did") else (
                f"pass --vars '{{{exc.name}: ...}}', set it under vars: in etrmflow.yml, "
                f"or give a default: var('{exc.name}', 'value')")
        self._add(path, f"{exc.what} '{exc.name}' is not set", hint=hint)

    def _undefined(self, exc: UndefinedError, source: str, path: KeyPath) -> None:
        message = str(exc.message or exc)
        attribute = _NO_ATTRIBUTE.match(message)
        if attribute:
            owner = _attribute_owner(self.context.environment, source, attribute["name"])
            sample = SAMPLE_REQUEST_CONTEXT.get(owner)
            hint = did_you_mean(attribute["name"], sample) if isinstance(sample, dict) else ""
            self._add(path, f"{owner} has no attribute '{attribute['name']}'", hint=hint)
            return
        undefined = _IS_UNDEFINED.match(message)
        name = undefined["name"] if undefined else message
        hint = did_you_mean(name, [*_FUNCTIONS, *REQUEST_TIME_NAMES])
        self._add(path, f"undefined name '{name}' in template", hint=hint if hint.startswith("did") else _AVAILABLE)

    def _add(self, path: KeyPath, message: str, hint: str = "") -> None:
        self.issues.append(ConfigIssue(location=self.document.locate(path), key_path=format_key_path(path),
                                       message=message, hint=hint))


def _secrets_intact(environment: TemplateEnvironment, source: str, value: Any) -> bool:
    """Every secret() of the template is in the value as its exact marker (not lowered, sliced...)."""
    calls = [call for call in environment.parse(source).find_all(nodes.Call)
             if isinstance(call.node, nodes.Name) and call.node.name == "secret"]
    if not calls:
        return True
    markers = set(SECRET_MARKER.findall(value)) if isinstance(value, str) else set()
    named = {call.args[0].value for call in calls if call.args and isinstance(call.args[0], nodes.Const)}
    return bool(markers) and named <= markers


def _attribute_owner(environment: TemplateEnvironment, source: str, attribute: str) -> str:
    """How the template names the value missing ``attribute``: ``var('region')``, ``window``."""
    tree = environment.parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if key == attribute:
            return _describe(node.node)
    return "the value"


def _describe(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_describe(node.node)}.{node.attr}"
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
        arguments = ", ".join(repr(arg.value) for arg in node.args if isinstance(arg, nodes.Const))
        return f"{node.node.name}({arguments})"
    return "the value"
