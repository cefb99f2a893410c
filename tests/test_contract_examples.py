"""``etrmflow test``: contract examples pass and fail exactly as they declare, through the real
validators, and a wrong example is reported at its file:line:col."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from etrmflow.cli.main import run_cli
from etrmflow.components import Violation
from etrmflow.engine.validation import Expected, UnknownViolation, compare, label, parse_expected
from etrmflow.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "contracts").glob("*.yml"))
NEW_CONTRACTS = ("power_trade", "gas_trade", "trade_confirmation", "remit_table1")

READING = """\
name: reading
version: 2
schema:
  type: object
  required: [meter, kwh]
  additionalProperties: false
  properties:
    meter: {type: string, format: eic}
    kwh: {type: number, minimum: 0}
rules:
  - name: kwh_below_cap
    check: kwh <= {{ var('cap', 1000) }}
examples:
  valid:
    - {meter: 10YNL----------L, kwh: 12.5}
    - {meter: 10YBE----------2, kwh: 1000}
  invalid:
    - violates: [kwh_below_cap]
      record: {meter: 10YNL----------L, kwh: 1000.5}
    - violates: ["format@/meter", minimum]
      record: {meter: 10YCB-EUROPEU--8, kwh: -1}
    - violates: [required]
      record: {meter: 10YNL----------L}
"""


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI reconfigures the etrmflow loggers; give the other tests theirs back."""
    loggers = [logging.getLogger("etrmflow"), logging.getLogger("aiohttp")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def project(root: Path, **contracts: str) -> Path:
    (root / "contracts").mkdir(parents=True)
    for name, text in contracts.items():
        (root / "contracts" / f"{name}.yml").write_text(text, encoding="utf-8")
    return root


def etrmflow_test(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(["test", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the shipped contracts -----------------------------------------------------------------------

def test_every_shipped_contract_passes_its_examples(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)

    code, out, err = etrmflow_test(capsys)

    assert (code, err) == (ExitCode.OK, "")
    lines = out.splitlines()
    assert "PASS remit_table1 v1 (3 valid, 5 invalid examples)" in lines
    assert "PASS power_trade v1 (4 valid, 5 invalid examples)" in lines
    expected = []
    for path in SHIPPED:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        examples = data["examples"]
        expected.append(f"PASS {data['name']} v{data['version']} "
                        f"({len(examples['valid'])} valid, {len(examples['invalid'])} invalid examples)")
    assert lines[:-1] == sorted(expected)
    assert lines[-1].startswith(f"Done. {len(SHIPPED)} of {len(SHIPPED)} contract(s) passed; ")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_contract_has_valid_and_invalid_examples(path: Path) -> None:
    examples = yaml.safe_load(path.read_text(encoding="utf-8"))["examples"]
    assert len(examples["valid"]) >= 2 and len(examples["invalid"]) >= 3
    for case in examples["invalid"]:
        assert case["violates"], case
        assert set(case) == {"record", "violates"}
    if path.stem in NEW_CONTRACTS:
        assert 2 <= len(examples["valid"]) <= 4 and 3 <= len(examples["invalid"]) <= 5


def test_the_new_contracts_are_shipped() -> None:
    assert set(NEW_CONTRACTS) <= {path.stem for path in SHIPPED}


def test_remit_notional_is_acers_example_to_the_cent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """40.45 x 15 = 606.75 passes; 606.77 is two cents off and is rejected by the shipped rule."""
    text = (REPO / "contracts" / "remit_table1.yml").read_text(encoding="utf-8")
    assert text.count("notional_amount: 606.75\n") == 4
    monkeypatch.chdir(project(tmp_path, remit_table1=text.replace("notional_amount: 606.75\n",
                                                                   "notional_amount: 606.77\n", 1)))

    code, out, _ = etrmflow_test(capsys, "remit_table1")

    assert code == ExitCode.RUN_FAILED
    assert out.splitlines()[:3] == [
        "FAIL remit_table1 v1 (3 valid, 5 invalid examples; 1 failed)",
        ("  contracts/remit_table1.yml:89:7: examples.valid[0]: expected no violations, "
        "found [notional_is_price_times_quantity]"),
        ("      not expected: notional_is_price_times_quantity: notional_amount must equal price x "
        "total_notional_contract_quantity (to 0.01)"),
    ]


# --- what a failing example looks like ---------------------------------------------------------

def test_all_examples_as_declared_exit_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(project(tmp_path, reading=READING))

    assert etrmflow_test(capsys) == (ExitCode.OK, ("PASS reading v2 (2 valid, 3 invalid examples)\n"
                                     "Done. 1 of 1 contract(s) passed; 5 example(s) checked.\n"), "")


def test_wrong_examples_are_reported_at_their_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    wrong = READING.replace("kwh: 12.5}", "kwh: -3}").replace("kwh: 1000.5}", "kwh: 999}")
    wrong = wrong.replace('["format@/meter", minimum]', '["format@/kwh", minimum]')
    monkeypatch.chdir(project(tmp_path, reading=wrong))

    code, out, err = etrmflow_test(capsys, "contracts/reading.yml")

    assert (code, err) == (ExitCode.RUN_FAILED, "")
    assert out == (
        "FAIL reading v2 (2 valid, 3 invalid examples; 3 failed)\n"
        "  contracts/reading.yml:15:7: examples.valid[0]: expected no violations, found [minimum@/kwh]\n"
        "      not expected: minimum@/kwh: -3 is less than the minimum of 0\n"
        "  contracts/reading.yml:18:7: examples.invalid[0]: expected [kwh_below_cap], found none\n"
        "      not found: kwh_below_cap\n"
        "  contracts/reading.yml:20:7: examples.invalid[1]: expected [format@/kwh, minimum], "
        "found [minimum@/kwh, format@/meter]\n"
        "      not found: format@/kwh\n"
        "      not expected: format@/meter: '10YCB-EUROPEU--8' is not a 'eic'\n"
        "Done. 0 of 1 contract(s) passed; 5 example(s) checked.\n")


def test_vars_reach_the_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(project(tmp_path, reading=READING))

    code, out, _ = etrmflow_test(capsys, "--vars", "{cap: 100}", "reading")

    assert code == ExitCode.RUN_FAILED
    assert out.splitlines()[1] == ("  contracts/reading.yml:16:7: examples.valid[1]: expected no violations, "
                                   "found [kwh_below_cap]")


def test_a_contract_without_examples_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bare = READING.split("examples:")[0]
    monkeypatch.chdir(project(tmp_path, reading=READING, bare=bare.replace("name: reading", "name: bare")))

    code, out, _ = etrmflow_test(capsys, ".")

    assert (code, out) == (ExitCode.OK, ("SKIP bare v2 (no examples)\nPASS reading v2 (2 valid, 3 invalid examples)\n"
                                        "Done. 2 of 2 contract(s) passed; 5 example(s) checked.\n"))


def test_paths_names_and_project_folders_select_contracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", reading=READING, other=READING.replace("name: reading", "name: other"))
    monkeypatch.chdir(tmp_path)

    for args, names in [(("p",), ["other", "reading"]), (("p/contracts",), ["other", "reading"]),
                        (("p/contracts/reading.yml", str(root / "contracts" / "reading.yml")), ["reading"])]:
        code, out, _ = etrmflow_test(capsys, *args)
        assert code == ExitCode.OK, args
        assert [line.split()[1] for line in out.splitlines()[:-1]] == names, args

    monkeypatch.chdir(root)
    code, out, _ = etrmflow_test(capsys, "other")
    assert (code, out.splitlines()[0]) == (ExitCode.OK, "PASS other v2 (2 valid, 3 invalid examples)")


# --- configuration errors exit 2 and test nothing ----------------------------------------------

@pytest.mark.parametrize(("edit", "args", "message"), [
    (("[kwh_below_cap]", "[kwh_below_cp]"), (),
     ("contracts/reading.yml:18:18: examples.invalid[0].violates[0]: 'kwh_below_cp' is neither a rule of this "
     "contract nor a JSON Schema keyword (did you mean 'kwh_below_cap'?)")),
    (('"format@/meter"', '"format@meter"'), (),
     ("contracts/reading.yml:20:18: examples.invalid[1].violates[0]: 'format@meter': the pointer after '@' must "
     "be empty or start with '/', e.g. format@/counterparty_lei")),
    (("[kwh_below_cap]", "[rule:kwh_cap]"), (),
     ("contracts/reading.yml:18:18: examples.invalid[0].violates[0]: this contract has no rule 'kwh_cap' "
     "(did you mean 'kwh_below_cap'?)")),
    (("[kwh_below_cap]", "[]"), (),
     "contracts/reading.yml:18:17: examples.invalid[0].violates: must not be empty"),
    (("record: {meter: 10YNL----------L}", "recrd: {meter: 10YNL----------L}"), (),
     ("contracts/reading.yml:22:7: examples.invalid[2]: missing required key 'record' "
     "(record: The sample record, as a vendor would send it)")),
    (("", ""), ("readings",), "contracts: no contract named 'readings' (did you mean 'reading'?)"),
    (("", ""), ("contracts/nope.yml",),
     ("contracts/nope.yml: no such contract file or folder (give contract files, contract names or project "
     "folders, e.g. contracts/trade.yml)")),
])
def test_config_errors_exit_2(edit: tuple[str, str], args: tuple[str, ...], message: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    text = READING.replace(*edit) if edit[0] else READING
    assert text != READING or not edit[0]
    monkeypatch.chdir(project(tmp_path, reading=text))

    code, out, err = etrmflow_test(capsys, *args)

    assert (code, out) == (ExitCode.CONFIG_ERROR, "")
    assert err.splitlines()[0] == message


def test_every_config_error_of_every_contract_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = READING.replace("kwh <= ", "kwh =< ")
    monkeypatch.chdir(project(tmp_path, reading=READING.replace("[required]", "[requird]"), z=broken))

    code, out, err = etrmflow_test(capsys)

    assert (code, out) == (ExitCode.CONFIG_ERROR, "")
    lines = err.splitlines()
    assert lines[0].startswith("contracts/reading.yml:22:18: examples.invalid[2].violates[0]: 'requird' ")
    assert lines[1].startswith("contracts/z.yml:12:16: rules[0].check: invalid expression")
    assert lines[-1] == "2 problems found; nothing was fetched."


# --- the violates vocabulary ---------------------------------------------------------------------

def _violation(keyword: str, pointer: str = "") -> Violation:
    return Violation(pointer=pointer, keyword=keyword, message="m", validator="v")


def test_entries_match_rules_keywords_and_pointers() -> None:
    rules = ["legs_sum_to_total"]
    assert parse_expected("legs_sum_to_total", rules) == Expected(text="legs_sum_to_total",
                                                                  keyword="rule:legs_sum_to_total")
    assert parse_expected("rule:legs_sum_to_total", rules).keyword == "rule:legs_sum_to_total"
    assert parse_expected("format@/legs/0/price", rules) == Expected(text="format@/legs/0/price", keyword="format",
                                                                     pointer="/legs/0/price")
    assert parse_expected("required@", rules).pointer == ""
    assert parse_expected("reference_data", rules, open_vocabulary=True).keyword == "reference_data"
    with pytest.raises(UnknownViolation):
        parse_expected("reference_data", rules)

    found = [_violation("format", "/legs/0/price"), _violation("required")]
    assert compare([parse_expected(t, rules) for t in ("format", "required@")], found) is None
    mismatch = compare([parse_expected(t, rules) for t in ("format@/legs/1/price", "legs_sum_to_total")], found)
    assert mismatch is not None
    assert [e.text for e in mismatch.missing] == ["format@/legs/1/price", "legs_sum_to_total"]
    assert [label(v) for v in mismatch.unexpected] == ["format@/legs/0/price", "required"]
    assert label(_violation("rule:legs_sum_to_total")) == "legs_sum_to_total"
