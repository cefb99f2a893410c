"""What a YAML author or a hostile vendor can make of the expression language, templates, the
YAML loader and the redactor: every attempt ends in a clear error, never a hang, a crash or a
leak. (End-to-end runs of the same attacks: tests/functional/test_security_adversarial.py.)

Some inputs made the old code compute a number of a billion digits inside one C call, which no
signal interrupts: those cases run in a child process with a deadline, so that a regression
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import SecurityError

from etrmflow.config.yamlfile import parse_yaml
from etrmflow.errors import ConfigError
from etrmflow.expr import ExpressionError, NotApplicable, compile_expression
from etrmflow.secrets import MASK, Redactor, SecretStore
from etrmflow.templating import (
    TemplateEnvironment,
    make_functions,
    render,
    render_tree,
    template_texts,
)

DEADLINE = 60
"""Seconds a child process may take for what must answer in milliseconds."""


def run_isolated(code: str) -> Any:
    """Run ``code`` (which prints one JSON value) in a child process; fail if it takes too long."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=DEADLINE, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still computing after {DEADLINE} s")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- expressions: numbers that cannot be computed ----------------------------------------------

EXPRESSIONS_THAT_RAN_FOREVER = {
    # int() and round() of a Decimal written short but a billion digits long
    "int(1e999999999)": "a number with more than 4300 digits",
    "round(1e999999999)": "a number with more than 4300 digits",
    "round(decimal(qty))": "a number with more than 4300 digits",
    # round(5, -10**8) computes 10 ** 100000000 first
    "round(volume, digits)": "round() to more than 4300 digits",
    # each factor is allowed, their product of 40 million bits is not
    "*".join(["2**499999"] * 40): "product too large",
}


def test_expressions_that_would_compute_forever_are_not_applicable_at_once() -> None:
    found = run_isolated(f"""
        import json
        from etrmflow.expr import ExpressionError, NotApplicable, compile_expression
        record = {{"qty": "1e999999999", "volume": 5, "digits": -100000000}}
        messages = {{}}
        for text in {list(EXPRESSIONS_THAT_RAN_FOREVER)!r}:
            try:
                messages[text] = repr(compile_expression(text).evaluate(record))
            except NotApplicable as exc:
                messages[text] = str(exc)
        print(json.dumps(messages))
    """)
    for text, reason in EXPRESSIONS_THAT_RAN_FOREVER.items():
        assert found[text] == f"{text}: {reason}"


def test_columns_of_python_integers_are_raised_to_a_power_with_the_records_limit() -> None:
    found = run_isolated("""
        import json
        import pandas as pd
        from etrmflow.expr import ExpressionError, NotApplicable, compile_expression
        frame = pd.DataFrame({"big": [10**20, 10**21]})  # beyond int64: a column of Python ints
        try:
            print(json.dumps(repr(compile_expression("big ** big").evaluate_frame(frame).tolist())))
        except NotApplicable as exc:
            print(json.dumps(str(exc)))
    """)
    assert found == "big ** big: exponent too large"


@pytest.mark.parametrize("digits", ["2.5", "True", "'2'"])
def test_round_takes_a_whole_number_of_digits(digits: str) -> None:
    with pytest.raises(NotApplicable, match="round\\(\\) needs a whole number of digits"):
        compile_expression(f"round(price, {digits})").evaluate({"price": 40.456})


def test_ordinary_int_and_round_are_unchanged() -> None:
    record = {"price": Decimal("40.456"), "volume": 1234}
    assert compile_expression("round(price, 2)").evaluate(record) == Decimal("40.46")
    assert compile_expression("round(price)").evaluate(record) == 40
    assert compile_expression("int(price)").evaluate(record) == 40
    assert compile_expression("round(volume, -2)").evaluate(record) == 1200
    assert compile_expression("round(2.675, 2)").evaluate({}) == 2.67


# --- expressions over columns: what records refuse, columns refuse too ---------------------------

FRAME = pd.DataFrame({"name": ["abc", "%999999999d"], "volume": [5, 6], "price": [1.5, 2.5e300]})


@pytest.mark.parametrize(("text", "message"), [
    # pandas repeats each string: 10**9 copies would exhaust memory (records refuse it)
    ("name * 1000000000", "name * 1000000000: '*' needs numbers"),
    ("3 * name", "3 * name: '*' needs numbers"),
    ("name % 1", "name % 1: '%' needs numbers"),
])
def test_text_columns_are_not_repeated_or_formatted(text: str, message: str) -> None:
    with pytest.raises(NotApplicable) as caught:
        compile_expression(text).evaluate_frame(FRAME.astype({"name": object}))
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "expected"), [
    # int64 wrapped around silently: 5 ** 30 came out as 8985370930000934825
    ("volume ** 30", [5 ** 30, 6 ** 30]),
    ("volume * 4000000000000000000", [20 * 10 ** 18, 24 * 10 ** 18]),
    ("volume * 2 + 1", [11, 13]),
])
def test_integer_columns_give_the_exact_results_records_give(text: str, expected: list[int]) -> None:
    result = compile_expression(text).evaluate_frame(FRAME)
    assert result.tolist() == expected
    assert [compile_expression(text).evaluate(row) for row in FRAME.to_dict("records")] == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("round(price, 300)", [1.5, 2.5e300]),  # numpy: [1.5, inf]
    ("round(price, -300)", [0.0, round(2.5e300, -300)]),  # numpy: 2.0000000000000004e+300
    ("round(volume, -19)", [0, 0]),
    ("round(volume + 9223372036854775000, -19)", [10 ** 19, 10 ** 19]),  # numpy: -9223372036854775808
    ("round(price, 1)", [1.5, 2.5e300]),
])
def test_rounding_columns_far_from_the_point_is_exact(text: str, expected: list[float]) -> None:
    assert compile_expression(text).evaluate_frame(FRAME).tolist() == expected
    assert [compile_expression(text).evaluate(row) for row in FRAME.to_dict("records")] == expected


def test_rounding_columns_to_a_huge_number_of_digits_is_not_applicable() -> None:
    with pytest.raises(NotApplicable, match="round\\(\\) to more than 4300 digits"):
        compile_expression("round(volume, -100000000)").evaluate_frame(FRAME)


def test_an_expression_too_deep_for_columns_is_an_expression_error() -> None:
    """It compiled for records, then the column builder ran out of stack: a crash (exit 3)."""
    expression = compile_expression("-" * 350 + "volume")
    with pytest.raises(ExpressionError, match="the expression is too deeply nested"):
        expression.check_frame_support()


# --- the YAML loader ------------------------------------------------------------------------------

def yaml_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, display="f.yml")
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "".join("  " * level + f"k{level}:\n" for level in range(3000)) + "  " * 3000 + "v\n",
], ids=["flow", "block"])
def test_deep_nesting_is_a_config_error_not_a_recursion_crash(text: str) -> None:
    [problem] = yaml_problems(text)
    assert "the file is nested more than 100 levels deep" in problem


@pytest.mark.parametrize(("text", "problem"), [
    ("a: " + "9" * 5000 + "\n",
     "f.yml:1:4: a: this number has too many digits (quote it if it is an identifier, not a number)"),
    ("a: 0x" + "f" * 5000 + "\n",
     "f.yml:1:4: a: this number has too many digits (quote it if it is an identifier, not a number)"),
    # NaN passed every minimum and maximum (max_ratio: .nan never failed a run) and made
    # plan.json invalid JSON; .inf too
    ("max_ratio: .nan\n",
     "f.yml:1:12: max_ratio: .nan is not a finite number (quote it if it is text; no setting takes NaN or infinity)"),
    ("a: -.inf\n",
     "f.yml:1:4: a: -.inf is not a finite number (quote it if it is text; no setting takes NaN or infinity)"),
    ("a: 1e999\n",
     "f.yml:1:4: a: 1e999 is not a finite number (quote it if it is text; no setting takes NaN or infinity)"),
    ("a: !!binary aGVsbG8=\n",
     ("f.yml:1:4: a: unsupported YAML tag 'tag:yaml.org,2002:binary' (etrmflow files hold plain values; remove the "
      "tag or quote the value)")),
    # an explicit tag on a value it does not fit raised ValueError or KeyError: a crash, exit 3
    ("a: !!int abc\n", "f.yml:1:4: a: 'abc' is not a valid int (remove the tag or quote the value)"),
    ("a: !!bool maybe\n", "f.yml:1:4: a: 'maybe' is not a valid bool (remove the tag or quote the value)"),
], ids=["long_int", "long_hex", "nan", "minus_inf", "overflow", "binary", "int_tag", "bool_tag"])
def test_values_no_setting_can_take_are_located_config_errors(text: str, problem: str) -> None:
    assert yaml_problems(text) == [problem]


# --- templates: bounded, and no loops ----------------------------------------------------------------

ENVIRONMENT = TemplateEnvironment()


def render_text(source: str) -> Any:
    return render(ENVIRONMENT, source, make_functions(vars={}, environ={}))


@pytest.mark.parametrize("source", [
    "{% for i in range(3) %}{{ i }}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f() %}{{ caller() }}{% endmacro %}{% call f() %}x{% endcall %}",
])
def test_loops_and_macros_are_not_available(source: str) -> None:
    with pytest.raises(TemplateSyntaxError, match="is not available in configuration templates"):
        render_text(source)


@pytest.mark.parametrize(("source", "message"), [
    ("{{ (10 ** 1000) ** 1000 }}", "the power is too large"),
    ("{{ (10 ** 1000 * 10 ** 1000) * (10 ** 1000) ** 100 }}", "the power is too large"),
    ("{{ '%200000d' % 1 }}", "a format width or precision above 100000 is not allowed"),
    ("{{ 'x %.*f' % (200000, 1.5) }}", "a format width or precision above 100000 is not allowed"),
    ("{{ '%200000d'|format(1) }}", "a format width or precision above 100000 is not allowed"),
    ("{{ '{:200000}'.format(1) }}", "str.format is not available in templates"),
    ("{{ 'x'.ljust(200000) }}", "access to attribute 'ljust' of 'str' object is unsafe"),
    ("{{ 'x'.zfill(200000) }}", "access to attribute 'zfill' of 'str' object is unsafe"),
    ("{{ range(1000)|join('x' * 1000) }}", "a joined string longer than 100000 is not allowed"),
    ("{{ ('x' * 1000).join(('y' * 1000)|list) }}", "a joined string longer than 100000 is not allowed"),
    ("{{ ('x' * 1000)|replace('x', 'y' * 1000) }}", "a replaced string longer than 100000 is not allowed"),
    # each call within its limit, a million characters in all
    ("{{ ('x' * 1000)|list|map('replace', 'x', 'y' * 2000)|list|length }}",
     "the template builds more than 1000000 characters"),
    ("{{ 5|round(-100000000) }}", "round: precision too large"),
    ("{{ [1]|tojson(200000) }}", "tojson: indent above 16 is not allowed"),
])
def test_templates_cannot_build_huge_values(source: str, message: str) -> None:
    with pytest.raises(SecurityError, match=message.replace("(", "\\(").replace("*", "\\*")):
        render_text(source)


@pytest.mark.parametrize("name", ["center", "indent", "wordwrap", "batch", "slice"])
def test_filters_that_pad_by_a_number_are_not_available(name: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=f"No filter named '{name}'"):
        render_text(f"{{{{ 'x'|{name}(200000) }}}}")


def test_a_deeply_nested_template_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="nested too deeply"):
        render_text("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}")


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ '%05d' % 42 }}", "00042"),
    ("{{ 'EU-%s' % 'DE' }}", "EU-DE"),
    ("{{ 'a-b'|replace('-', '_') }}", "a_b"),
    ("{{ 'a-b'.replace('-', '_') }}", "a_b"),
    ("{{ ['a', 'b']|join(',') }}", "a,b"),
    ("{{ ','.join(['a', 'b']) }}", "a,b"),
    ("{{ 'page %d'|format(3) }}", "page 3"),
    ("{{ 2 ** 64 }}", 2 ** 64),
    ("{{ 'ab' * 50000 }}", "ab" * 50000),
    ("{% set region = 'eu' %}{{ region|upper }}", "EU"),
])
def test_ordinary_templates_render_as_before(source: str, expected: Any) -> None:
    assert render_text(source) == expected


def test_request_time_rendering_leaves_what_the_vendor_sent_as_text() -> None:
    """A cursor or next link is put into the request the paginator builds; rendered, a vendor's
    ``{{ env_var('AWS_SECRET_ACCESS_KEY') }}`` came back with the variable's value in it."""
    configured = {"params": {"limit": "{{ 10 * page }}"}, "headers": {"X-Page": "{{ page }}"}}
    only = template_texts(configured)
    context = {**make_functions(vars={}, environ={"AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}), "page": 2}
    request = {"limit": "{{ 10 * page }}", "cursor": "{{ env_var('AWS_SECRET_ACCESS_KEY') }}"}
    assert render_tree(ENVIRONMENT, request, context, only) == {
        "limit": 20, "cursor": "{{ env_var('AWS_SECRET_ACCESS_KEY') }}"}
    assert only == frozenset({"{{ 10 * page }}", "{{ page }}"})


# --- secrets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["ops", "o", "op", "a-much-longer-user-name", ""])
def test_a_basic_auth_header_echoed_back_is_masked_and_found(user: str) -> None:
    """The header holds base64(user:password): the password at any of three byte alignments."""
    redactor = Redactor()
    redactor.add("basic-passw0rd-xyz")
    header = "Basic " + base64.b64encode(f"{user}:basic-passw0rd-xyz".encode()).decode()
    echoed = f'denied: {{"Authorization": "{header}"}}'
    assert header not in redactor.redact(echoed)
    assert MASK in redactor.redact(echoed)
    assert redactor.found_in(echoed.encode())
    assert redactor.found_in(echoed.replace("/", "\\/").encode())


def test_base64_spellings_are_looked_for_from_48_bits_of_a_secret() -> None:
    """Fewer characters could be met by chance in ordinary data, and quarantine it."""
    short, six = Redactor(), Redactor()
    short.add("abcd1")  # 40 bits: 6 Base64 characters
    six.add("abcd12")  # 48 bits: 8
    assert short.redact("YWJjZDE= YWJjZDEy") == "YWJjZDE= YWJjZDEy"
    assert six.redact("YWJjZDE= YWJjZDEy") == "YWJjZDE= ***"


def test_the_store_resolves_only_the_secrets_the_configuration_declared() -> None:
    store = SecretStore(environ={"ACME_KEY": "key-value-1", "AWS_SECRET_ACCESS_KEY": "aws-value-2"})
    store.declare(["ACME_KEY"])
    sent = store.resolve("/trades?key=${secret:ACME_KEY}&cursor=${secret:AWS_SECRET_ACCESS_KEY}")
    assert sent == "/trades?key=key-value-1&cursor=${secret:AWS_SECRET_ACCESS_KEY}"
