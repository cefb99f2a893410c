"""Load-time rendering of Jinja inside parsed YAML values (never the raw text, as dbt does).

Strings that use request-time names (``window``, ``page``, ``cursor``, ``offset``, ``request``)
are kept as templates for the engine to render per request; they are test-rendered here with
sample values so that a typo still fails ``etrmflow validate`` with a location.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError

from etrmflow.config.check import did_you_mean
from etrmflow.config.yamlfile import KeyPath, YamlDocument, format_key_path
from etrmflow.errors import ConfigIssue
from etrmflow.templating import (
    REQUEST_TIME_NAMES, MissingValue, TemplateEnvironment, is_template, make_functions,
    referenced_names, render,
)

SAMPLE_REQUEST_CONTEXT: dict[str, Any] = {
    "window": {"start": "2025-01-01", "end": "2025-01-08", "index": 0},
    "page": 1, "cursor": "", "offset": 0, "request": {"attempt": 1},
}

REQUEST_TIME_KEYS = frozenset({"params", "headers", "body", "path"})
"""Keys under which request-time templates are allowed (stream and pipeline source)."""


@dataclass(slots=True)
class RenderContext:
    vars: Mapping[str, Any]
    environ: Mapping[str, str]
    secret_defaults: dict[str, str] = field(default_factory=dict)
    environment: TemplateEnvironment = field(default_factory=TemplateEnvironment)

    def functions(self) -> dict[str, Any]:
        return make_functions(vars=self.vars, environ=self.environ, secret_defaults=self.secret_defaults)


def render_document(document: YamlDocument, context: RenderContext) -> tuple[Any, list[ConfigIssue]]:
    """The document's data with load-time templates rendered, and every problem found."""
    issues: list[ConfigIssue] = []
    renderer = _Renderer(document, context, issues)
    return renderer.walk(document.data, ()), issues


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
        if is_template(value):
            return self.render_string(value, path)
        return value

    def render_string(self, source: str, path: KeyPath) -> Any:
        environment = self.context.environment
        try:
            names = referenced_names(environment, source)
            request_names = names & REQUEST_TIME_NAMES
            if request_names:
                self._check_request_time(path, request_names)
                render(environment, source, {**self.functions, **SAMPLE_REQUEST_CONTEXT})
                return source
            return render(environment, source, self.functions)
        except MissingValue as exc:
            self._missing(exc, path)
        except TemplateSyntaxError as exc:
            self._add(path, f"template syntax error: {exc.message}",
                      hint="check the {{ }} and {% %} delimiters and quotes")
        except UndefinedError as exc:
            self._undefined(exc, path)
        except TemplateError as exc:
            self._add(path, f"template error: {exc}")
        except (TypeError, ValueError, ArithmeticError) as exc:
            self._add(path, f"template error: {type(exc).__name__}: {exc}")
        return source

    def _check_request_time(self, path: KeyPath, names: set[str]) -> None:
        if not any(isinstance(part, str) and part in REQUEST_TIME_KEYS for part in path):
            listed = ", ".join(sorted(names))
            self._add(path, f"request-time variable {listed} can only be used in a stream's or "
                            f"source's params, headers, body or path")

    def _missing(self, exc: MissingValue, path: KeyPath) -> None:
        if exc.what == "environment variable":
            hint = f"export {exc.name}=... or give a default: env_var('{exc.name}', 'value')"
        else:
            known = list(self.context.vars)
            close = did_you_mean(exc.name, known) if known else ""
            hint = close if close.startswith("did") else (
                f"pass --vars '{{{exc.name}: ...}}', set it under vars: in etrmflow.yml, "
                f"or give a default: var('{exc.name}', 'value')")
        self._add(path, f"{exc.what} '{exc.name}' is not set", hint=hint)

    def _undefined(self, exc: UndefinedError, path: KeyPath) -> None:
        message = str(exc.message or exc)
        name = message.split("'")[1] if message.count("'") >= 2 else message
        known = ["env_var", "var", "secret", *sorted(REQUEST_TIME_NAMES)]
        hint = did_you_mean(name, known)
        self._add(path, f"undefined name '{name}' in template", hint=hint if hint.startswith("did") else
                  "available: env_var(), var(), secret(); in params also window, page, cursor, offset")

    def _add(self, path: KeyPath, message: str, hint: str = "") -> None:
        self.issues.append(ConfigIssue(location=self.document.locate(path), key_path=format_key_path(path),
                                       message=message, hint=hint))
