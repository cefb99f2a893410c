"""Templating: native values, env_var/var/secret, the sandbox, and load-time rendering of documents."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from jinja2 import TemplateError, UndefinedError
from jinja2.sandbox import SecurityError

from etrmflow.config.render import RenderContext, render_document
from etrmflow.config.yamlfile import parse_yaml
from etrmflow.secrets import SecretStore
from etrmflow.templating import (
    MissingValue,
    TemplateEnvironment,
    is_template,
    make_functions,
    referenced_names,
    render,
    render_tree,
)

ENVIRONMENT = TemplateEnvironment()


def render_with(source: str, *, vars: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
                defaults: dict[str, str] | None = None) -> Any:
    functions = make_functions(vars=vars or {}, environ=environ or {}, secret_defaults=defaults)
    return render(ENVIRONMENT, source, functions)


# --- native values ------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "expected"), [
    ("{{ var('limit', 100) }}", 100),
    ("{{ var('ratio', 0.25) }}", 0.25),
    ("{{ var('on', false) }}", False),
    ("{{ [1, 2] }}", [1, 2]),
    ("{{ {'a': 1} }}", {"a": 1}),
    ("{{ none }}", None),
    ("{{ 3 * 4 }}", 12),
    ("limit={{ var('limit', 100) }}", "limit=100"),
    ("{{ 1 }}{{ 2 }}", "12"),
    (" {{ 1 }}", " 1"),
    ("{% if true %}7{% endif %}", "7"),
])
def test_one_expression_keeps_its_type_and_text_around_it_makes_a_string(source: str, expected: Any) -> None:
    value = render_with(source)
    assert (value, type(value)) == (expected, type(expected))


@pytest.mark.parametrize("text", ["0012", "1e5", "True", "[1, 2]", "None", "08"])
def test_strings_are_never_reparsed_as_python_literals(text: str) -> None:
    assert render_with("{{ env_var('X') }}", environ={"X": text}) == text
    assert render_with("{{ var('x') }}", vars={"x": text}) == text
    assert render_with("{{ '" + text + "' }}") == text


def test_int_and_float_filters_fail_instead_of_guessing() -> None:
    assert render_with("{{ env_var('N') | int }}", environ={"N": "8"}) == 8
    assert render_with("{{ env_var('N') | int }}", environ={"N": " 3.0 "}) == 3
    assert render_with("{{ env_var('N') | float }}", environ={"N": "2.5"}) == 2.5
    assert render_with("{{ env_var('N') | int(4) }}", environ={"N": "many"}) == 4
    with pytest.raises(TemplateError, match=r"^int: 'eight' is not a whole number$"):
        render_with("{{ env_var('N') | int }}", environ={"N": "eight"})
    with pytest.raises(TemplateError, match=r"^int: 2.5 is not a whole number$"):
        render_with("{{ 2.5 | int }}")
    with pytest.raises(TemplateError, match=r"^float: 'n/a' is not a number$"):
        render_with("{{ 'n/a' | float }}")


# --- env_var, var, secret ------------------------------------------------------------------------

def test_env_var_and_var_use_the_default_only_when_unset() -> None:
    assert render_with("{{ env_var('X', 'd') }}", environ={"X": ""}) == ""
    assert render_with("{{ env_var('X', 'd') }}") == "d"
    assert render_with("{{ var('x', 5) }}", vars={"x": 0}) == 0
    assert render_with("{{ var('x', 5) }}") == 5


@pytest.mark.parametrize(("source", "what", "name"), [
    ("{{ env_var('ACME_URL') }}", "environment variable", "ACME_URL"),
    ("{{ var('since') }}", "variable", "since"),
])
def test_a_value_that_is_not_set_and_has_no_default_raises(source: str, what: str, name: str) -> None:
    with pytest.raises(MissingValue) as caught:
        render_with(source)
    assert (caught.value.what, caught.value.name, str(caught.value)) == (what, name, f"{what} '{name}' is not set")


def test_secret_renders_a_marker_never_the_value() -> None:
    defaults: dict[str, str] = {}
    environ = {"ACME_TOKEN": "s3cr3t-value"}
    assert render_with("{{ secret('ACME_TOKEN') }}", environ=environ, defaults=defaults) == "${secret:ACME_TOKEN}"
    assert render_with("Bearer {{ secret('ACME_TOKEN') }}", environ=environ) == "Bearer ${secret:ACME_TOKEN}"
    assert render_with("{{ secret('DEMO', 'demo-secret') }}", defaults=defaults) == "${secret:DEMO}"
    assert defaults == {"DEMO": "demo-secret"}
    assert SecretStore(environ=environ, defaults=defaults).resolve("${secret:ACME_TOKEN}/${secret:DEMO}") == \
        "s3cr3t-value/demo-secret"


def test_a_secret_name_must_be_an_environment_variable_name() -> None:
    with pytest.raises(TemplateError, match=r"^secret name 'acme token' must be a valid environment variable name$"):
        render_with("{{ secret('acme token') }}")


# --- the sandbox --------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "error"), [
    ("{{ ''.__class__ }}", SecurityError),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", SecurityError),
    ("{{ ''|attr('__class__') }}", SecurityError),
    ("{{ env_var.__globals__ }}", SecurityError),
    ("{{ var.__code__ }}", SecurityError),
    ("{{ self._TemplateReference__context }}", SecurityError),
    ("{{ cycler.__init__.__globals__ }}", SecurityError),
    ("{{ lipsum.__globals__['os'] }}", UndefinedError),
    ("{{ [].append(1) }}", SecurityError),
    ("{{ 'x' * 100000000 }}", SecurityError),
    ("{{ 10 ** 100000000 }}", SecurityError),
    ("{{ range(10 ** 9) | list }}", OverflowError),
])
def test_the_sandbox_blocks_escapes_and_exhaustion(source: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        render_with(source)


def test_helpers() -> None:
    assert is_template("a {{ b }}") and is_template("{% if x %}{% endif %}") and not is_template("$.a")
    assert not is_template(5)
    assert referenced_names(ENVIRONMENT, "{{ page }}-{{ var('x') }}") == {"page", "var"}
    tree = {"a": ["{{ page }}", {"b": "{{ page + 1 }}"}], "c": 3}
    assert render_tree(ENVIRONMENT, tree, {"page": 2}) == {"a": [2, {"b": 3}], "c": 3}


# --- load-time rendering of a document ------------------------------------------------------------

def render_file(text: str, *, vars: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    document = parse_yaml(textwrap.dedent(text), display="c.yml")
    data, issues = render_document(document, RenderContext(vars=vars or {}, environ=environ or {}))
    return data, [str(issue) for issue in issues]


def test_load_time_templates_render_and_request_time_templates_stay() -> None:
    data, issues = render_file("""\
        base_url: "{{ env_var('URL', 'sandbox://x') }}"
        params: {limit: "{{ var('limit', 100) }}"}
        streams:
          trades:
            path: "/trades/{{ page }}"
            params: {after: "{{ cursor }}", from: "{{ window.start }}"}
            headers: {X-Offset: "{{ offset }}"}
            windows: {start: 2025-01-01, end: 2025-02-01, step: P1D}
        """, environ={"URL": "https://api.example"})
    assert issues == []
    assert data == {
        "base_url": "https://api.example", "params": {"limit": 100},
        "streams": {"trades": {"path": "/trades/{{ page }}",
                               "params": {"after": "{{ cursor }}", "from": "{{ window.start }}"},
                               "headers": {"X-Offset": "{{ offset }}"},
                               "windows": {"start": "2025-01-01", "end": "2025-02-01", "step": "P1D"}}},
    }


def test_a_sandbox_escape_in_a_file_is_a_config_issue() -> None:
    data, issues = render_file("""\
        a: "{{ ''.__class__.__mro__ }}"
        b: "{{ cycler.__init__.__globals__ }}"
        c: "{{ 'x' * 10000000 }}"
        """)
    assert issues == [
        "c.yml:1:4: a: template not allowed: Python internals such as '__class__' "
        "(templates only read values: env_var(), var(), secret() and filters)",
        "c.yml:2:4: b: template not allowed: Python internals such as '__init__' "
        "(templates only read values: env_var(), var(), secret() and filters)",
        "c.yml:3:4: c: template not allowed: a repeated string or list longer than 100000 is not allowed "
        "(templates only read values: env_var(), var(), secret() and filters)",
    ]
    assert data["a"] == "{{ ''.__class__.__mro__ }}"  # left as written, never half-rendered


def test_secret_markers_cannot_be_altered_in_a_template() -> None:
    _, issues = render_file("""\
        headers:
          ok: "Bearer {{ secret('TOKEN') }}"
          lowered: "{{ secret('TOKEN') | lower }}"
          sliced: "{{ secret('TOKEN')[:4] }}"
        """)
    message = ("secret() must be used as it is: a filter, slice or arithmetic would change the credential sent "
               "(write {{ secret('NAME') }} alone or inside a string)")
    assert issues == [f"c.yml:3:12: headers.lowered: {message}", f"c.yml:4:11: headers.sliced: {message}"]


def test_secrets_are_only_allowed_where_a_request_resolves_them() -> None:
    data, issues = render_file("""\
        base_url: "https://{{ secret('HOST') }}"
        auth: {type: bearer, token: "{{ secret('TOKEN') }}"}
        streams:
          s: {path: "/{{ secret('P') }}", body: {key: "{{ secret('K') }}"}}
        sinks:
          - {type: sqlite, path: "{{ secret('DB') }}.db"}
        source: {params: {key: "{{ secret('K') }}"}}
        """)
    assert issues == [
        "c.yml:6:26: sinks[0].path: secret() is only resolved in what a request sends: here its marker text would "
        "be used as it is (use secret() in auth, base_url, headers, params, path or body)"]
    assert data["streams"]["s"]["body"] == {"key": "${secret:K}"}


def test_rendering_problems_are_located_and_explained() -> None:
    _, issues = render_file("""\
        a: "{{ var }}"
        b: "{{ var('region', {}).code }}"
        streams:
          s:
            params: {from: "{{ window.strat }}"}
            windows: {start: 2025-01-01, end: 2025-02-01, step: P1D}
            records: "{{ page }}"
          t:
            params: {from: "{{ window.start }}"}
        """)
    assert issues == [
        "c.yml:1:4: a: template gives 'var', which is not a value (call it: var('NAME'))",
        "c.yml:2:4: b: var('region') has no attribute 'code'",
        "c.yml:5:20: streams.s.params.from: window has no attribute 'strat' (did you mean 'start'?)",
        "c.yml:7:14: streams.s.records: request-time variable 'page' cannot be used here: only a stream's params, "
        "headers, body or path (or a pipeline's source.params) are rendered per request",
        "c.yml:9:20: streams.t.params.from: 'window' is only set in streams with a windows: block "
        "(add windows: {start: ..., end: ..., step: P1D} to this stream)",
    ]
