"""The python step's import rules: project modules only, fresh per project, never shadowing others.

The case file tests/cases/transforms/python.yml covers calling conventions and error messages;
these tests need project folders of their own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from etrmflow.components import Kind
from etrmflow.plugins import Registry
from etrmflow.steps.common import StepError
from etrmflow.testing import EtrmflowProject

STEP = "def step(frame):\n    return frame.assign(source={source!r})\n"


def build(project: Path, **options: Any) -> Any:
    cls = Registry.default(load_entry_points=False).get(Kind.TRANSFORM, "python")
    assert cls is not None
    return cls(options, project_dir=str(project))


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def forget_project_modules() -> Any:
    """Project modules these tests import must not outlive them."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0].startswith("h1_"):
            del sys.modules[name]


def test_two_projects_with_a_module_of_the_same_name_each_get_their_own(tmp_path: Path) -> None:
    first = write(tmp_path / "a", {"h1_steps.py": STEP.format(source="a")})
    second = write(tmp_path / "b", {"h1_steps.py": STEP.format(source="b")})
    frame = pd.DataFrame({"x": [1]})

    from_a = build(first, function="h1_steps:step").apply(frame)
    from_b = build(second, function="h1_steps:step").apply(frame)
    again_a = build(first, function="h1_steps:step").apply(frame)

    assert (from_a["source"][0], from_b["source"][0], again_a["source"][0]) == ("a", "b", "a")


def test_the_project_folder_is_on_the_import_path_only_while_importing(tmp_path: Path) -> None:
    project = write(tmp_path, {"h1_lazy.py": "def step(frame):\n    import h1_helper\n    return frame\n",
                               "h1_helper.py": "X = 1\n"})
    step = build(project, function="h1_lazy:step")

    assert str(project) not in sys.path
    with pytest.raises(ModuleNotFoundError, match="h1_helper"):
        step.apply(pd.DataFrame({"x": [1]}))


def test_a_module_named_like_a_standard_module_is_refused(tmp_path: Path) -> None:
    project = write(tmp_path, {"json.py": "def step(frame):\n    return frame\n"})

    with pytest.raises(StepError, match="the module name 'json' is already taken by the standard library; "
                                        "rename the project's json module"):
        build(project, function="json:step")
    assert not hasattr(sys.modules["json"], "step")


def test_a_module_named_like_an_installed_package_is_refused(tmp_path: Path) -> None:
    project = write(tmp_path, {"pandas.py": "def step(frame):\n    return frame\n"})

    with pytest.raises(StepError, match=r"the module name 'pandas' is already taken by .*pandas"):
        build(project, function="pandas:step")


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    project = write(tmp_path, {"h1_broken.py": "def step(frame)\n    return frame\n"})

    with pytest.raises(StepError, match=r"importing 'h1_broken' from .* failed: SyntaxError: .*h1_broken.py, line 1"):
        build(project, function="h1_broken:step")


def test_a_fixed_module_is_imported_again_after_a_failed_import(tmp_path: Path) -> None:
    project = write(tmp_path, {"h1_fixed.py": "raise RuntimeError('not yet')\n"})
    with pytest.raises(StepError, match="RuntimeError: not yet"):
        build(project, function="h1_fixed:step")

    write(project, {"h1_fixed.py": STEP.format(source="fixed")})

    assert build(project, function="h1_fixed:step").apply(pd.DataFrame({"x": [1]}))["source"][0] == "fixed"


def test_validate_reports_a_broken_step_module_at_the_step_and_fetches_nothing(
        etrmflow_project: EtrmflowProject) -> None:
    etrmflow_project.copy_from(Path(__file__).resolve().parents[1], "connectors", "contracts", "etrmflow.yml")
    etrmflow_project.write({
        "h1_validate_steps.py": "def enrich(frame):\n    return frame\n",
        "pipelines/t.yml": """\
            name: t
            source: {connector: acme_etrm, stream: trades}
            contract: trade
            transforms:
              - {type: python, function: "h1_validate_steps:enrch"}
            """,
    })

    result = etrmflow_project.run("validate", "pipelines/t.yml")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("pipelines/t.yml:5:5: transforms[0]: invalid python options: module "
                                    "'h1_validate_steps' ("), result.stderr
    assert "has no 'enrch'" in result.stderr
