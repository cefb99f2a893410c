"""The table of transform steps: each case feeds rows through real steps and checks every row out.

A case file (``tests/cases/transforms/<anything>.yml``) holds a list of cases::

    cases:
      - name: Berlin spring-forward day has 23 hours     # unique within the file
        steps:                          # one or more step blocks, exactly as under a pipeline's `transforms:`
          - {type: expand_intervals, start: delivery_start, end: delivery_end, resolution: PT1H, tz: Europe/Berlin}
        input:                          # the rows of one page (records as the vendor sent them) ...
          - {trade_id: T1, delivery_start: "2026-03-28T23:00:00Z", delivery_end: "2026-03-29T22:00:00Z"}
        pages: [[...], [...]]           # ... or several pages, applied one after another as a run does
        decimals: [price]               # optional: these input columns' values become Decimal (declared money)
        # then exactly one of the three outcomes:
        expected:                       # every output row, in order; each row's keys, in order, must be
          - {...}                       #   exactly the output's columns
        expected_count: 23              # the number of output rows, with optionally
        expected_rows:                  #   some rows checked (position, negative from the end: the columns given)
          0: {interval_start: "2026-03-28T23:00:00+00:00"}
        error: "no legs in column"      # a substring of the error: a config issue (options rejected as
                                        #   `etrmflow validate` rejects them) or the run's TransformError
        # optional checks:
        expected_columns: [trade_id, ...]   # the output's columns, in order (useful with expected_count)
        expected_types: {price: decimal}    # the type of every non-empty value of a column: decimal, float,
                                            #   int, str, bool, timestamp, date, list, dict
        fails_at: validate              # with error: validate (options rejected before any row) or run

Steps are checked and built through the real registry and the same code as ``etrmflow validate``
and ``etrmflow run`` (options schema, then the constructor), and applied with
``etrmflow.engine.stages.apply_steps``, page by page. The project folder of every case is a
temporary copy of ``tests/cases/transforms/data/`` (reference files, Python modules for the
``python`` step) in which each ``<name>.sql`` script has been run into an SQLite ``<name>.db``.

Output values are compared in plain form: timestamps as ISO 8601 with their offset
(``2026-03-29T01:00:00+02:00``), Decimals as their exact text (``"40.40"``, so the scale counts
too), empty cells (None, NaN, NaT, NA) as null, numpy scalars as Python values. Input rows are
read with etrmflow's YAML loader, so times stay strings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from etrmflow.components import Kind
from etrmflow.config.blocks import check_component
from etrmflow.config.yamlfile import YamlDocument, load_yaml
from etrmflow.engine.stages import apply_steps
from etrmflow.engine.validation import build_component
from etrmflow.errors import EtrmflowError
from etrmflow.plan import ComponentPlan
from etrmflow.plugins import Registry

CASES = Path(__file__).parent / "cases" / "transforms"
DATA = CASES / "data"
CASE_KEYS = {"name", "steps", "input", "pages", "decimals", "expected", "expected_count", "expected_rows",
             "expected_columns", "expected_types", "error", "fails_at"}
TYPES: dict[str, tuple[type, ...]] = {
    "decimal": (decimal.Decimal,), "float": (float,), "int": (int,), "str": (str,), "bool": (bool,),
    "timestamp": (pd.Timestamp,), "date": (dt.date,), "list": (list, tuple, np.ndarray), "dict": (dict,)}


def case_files() -> list[Path]:
    return sorted(CASES.glob("*.yml"))


def all_cases() -> Iterator[Any]:
    for path in case_files():
        document = load_yaml(path, display=str(path.relative_to(CASES.parents[1])))
        for index, case in enumerate(document.data["cases"]):
            yield pytest.param(document, index, id=f"{path.stem}: {case.get('name', index)}")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.default(load_entry_points=False)


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cases' project folder: a copy of data/, its SQL scripts run into databases."""
    root = tmp_path_factory.mktemp("transform_cases") / "project"
    shutil.copytree(DATA, root, ignore=shutil.ignore_patterns("__pycache__"))
    for script in root.glob("*.sql"):
        with contextlib.closing(sqlite3.connect(script.with_suffix(".db"))) as db:
            db.executescript(script.read_text(encoding="utf-8"))
    return root


# --- turning a case into steps and frames --------------------------------------------------------

class CaseError(Exception):
    """The steps refused the case: at ``stage`` validate (options) or run (a batch)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def build_steps(document: YamlDocument, index: int, registry: Registry, project: Path) -> list[Any]:
    """The case's steps, checked by the validate code path (schema, then constructor), then built
    as a run builds them."""
    blocks = document.data["cases"][index]["steps"]
    issues = [issue for number, block in enumerate(blocks)
              for issue in check_component(document, block, ("cases", index, "steps", number), Kind.TRANSFORM,
                                           registry, project_dir=str(project))]
    if issues:
        raise CaseError("validate", "\n".join(map(str, issues)))
    plans = [ComponentPlan(type=block["type"], options={k: v for k, v in block.items() if k != "type"})
             for block in blocks]
    try:
        return [build_component(registry, Kind.TRANSFORM, plan, project_dir=str(project)) for plan in plans]
    except EtrmflowError as exc:
        raise CaseError("validate", str(exc)) from exc


def input_pages(case: Mapping[str, Any]) -> list[pd.DataFrame]:
    """The case's pages as the frames a run hands to its first step (decimals converted)."""
    pages = case["pages"] if "pages" in case else [case["input"]]
    decimals = set(case.get("decimals", []))
    frames = []
    for rows in pages:
        records = [{key: _as_decimal(value) if key in decimals else value for key, value in row.items()}
                   for row in rows]
        frames.append(pd.DataFrame.from_records(records))
    return frames


def _as_decimal(value: Any) -> Any:
    return None if value is None else decimal.Decimal(str(value))


def run_case(document: YamlDocument, index: int, registry: Registry, project: Path) -> pd.DataFrame:
    steps = build_steps(document, index, registry, project)
    try:
        return apply_steps(steps, input_pages(document.data["cases"][index]))
    except EtrmflowError as exc:
        raise CaseError("run", str(exc)) from exc


# --- comparing in plain values ---------------------------------------------------------------

def plain(value: Any) -> Any:
    """A value as the case files write it (see the module docstring)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    return value


def output_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(key): plain(value) for key, value in row.items()} for row in frame.to_dict("records")]


def check_types(frame: pd.DataFrame, expected: Mapping[str, str]) -> None:
    for column, kind in expected.items():
        assert column in frame.columns, f"no output column {column!r}"
        values = [value.item() if isinstance(value, np.generic) else value for value in frame[column]]
        wrong = [value for value in values if plain(value) is not None
                 and (not isinstance(value, TYPES[kind]) or (kind == "int" and isinstance(value, bool)))]
        assert not wrong, f"column {column!r}: {len(wrong)} value(s) not {kind}, e.g. {wrong[0]!r} ({type(wrong[0])})"


def check_rows(frame: pd.DataFrame, case: Mapping[str, Any]) -> None:
    rows = output_rows(frame)
    if "expected_columns" in case:
        assert list(frame.columns) == case["expected_columns"]
    if "expected" in case:
        for number, (got, want) in enumerate(zip(rows, case["expected"])):
            assert list(got) == list(want), f"row {number}: columns differ"
            assert got == want, f"row {number} differs"
        assert len(rows) == len(case["expected"]), f"{len(rows)} rows out, {len(case['expected'])} expected"
    else:
        assert len(rows) == case["expected_count"]
        for position, want in (case.get("expected_rows") or {}).items():
            got = rows[int(position)]
            assert {key: got.get(key, "<no such column>") for key in want} == want, f"row {position} differs"
    check_types(frame, case.get("expected_types") or {})


# --- the tests -------------------------------------------------------------------------------

@pytest.mark.parametrize(("document", "index"), list(all_cases()))
def test_transform_case(document: YamlDocument, index: int, registry: Registry, project: Path) -> None:
    case = document.data["cases"][index]
    if "error" in case:
        with pytest.raises(CaseError) as raised:
            run_case(document, index, registry, project)
        assert case["error"] in str(raised.value), f"{raised.value.stage} error:\n{raised.value}"
        if "fails_at" in case:
            assert raised.value.stage == case["fails_at"], str(raised.value)
        return
    try:
        frame = run_case(document, index, registry, project)
    except CaseError as exc:
        pytest.fail(f"{exc.stage} failed:\n{exc}")
    check_rows(frame, case)


@pytest.mark.parametrize("path", case_files(), ids=lambda p: p.stem)
def test_case_file_is_well_formed(path: Path) -> None:
    """A typo in a case file must not quietly skip a check."""
    cases = load_yaml(path).data["cases"]
    names = [case.get("name") for case in cases]
    assert len(set(names)) == len(names), "case names must be unique within a file"
    for case in cases:
        assert set(case) <= CASE_KEYS, f"{case.get('name')}: unknown keys {sorted(set(case) - CASE_KEYS)}"
        assert {"name", "steps"} <= set(case), f"{case.get('name')}: needs name and steps"
        assert ("input" in case) != ("pages" in case), f"{case['name']}: give input or pages"
        outcomes = [key for key in ("expected", "expected_count", "error") if key in case]
        assert len(outcomes) == 1, f"{case['name']}: give exactly one of expected, expected_count, error"
        assert "expected_rows" not in case or "expected_count" in case, f"{case['name']}: expected_rows needs expected_count"
        assert "fails_at" not in case or case["fails_at"] in ("validate", "run"), case["name"]
        kinds = set((case.get("expected_types") or {}).values())
        assert kinds <= set(TYPES), f"{case['name']}: unknown expected_types {sorted(kinds - set(TYPES))}"


def test_every_builtin_step_has_cases(registry: Registry) -> None:
    used = {block["type"] for path in case_files() for case in load_yaml(path).data["cases"]
            for block in case["steps"]}
    builtin = {entry.name for entry in registry.entries() if entry.kind is Kind.TRANSFORM and entry.origin == "builtin"}
    assert builtin - used == set(), f"no case file exercises: {sorted(builtin - used)}"
