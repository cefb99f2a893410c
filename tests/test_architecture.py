"""The layering rules of docs/architecture.md, enforced by reading the imports."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import etrmflow
from etrmflow import hookspecs

PACKAGE = Path(etrmflow.__file__).parent


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.startswith("etrmflow")}


def modules_under(*parts: str) -> list[Path]:
    base = PACKAGE.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


FORBIDDEN = [
    (("engine",), ("etrmflow.config", "etrmflow.cli", "etrmflow.compile")),
    (("compile",), ("etrmflow.engine", "etrmflow.cli")),
    (("config",), ("etrmflow.engine", "etrmflow.cli")),
    (("builtins",), ("etrmflow.cli", "etrmflow.config")),
    (("sinks",), ("etrmflow.cli", "etrmflow.config", "etrmflow.engine")),
    (("sandbox",), ("etrmflow.cli", "etrmflow.config", "etrmflow.engine")),
    (("dlq",), ("etrmflow.cli", "etrmflow.config")),
    (("audit",), ("etrmflow.engine", "etrmflow.config", "etrmflow.cli", "etrmflow.compile")),
    (("lineage",), ("etrmflow.cli", "etrmflow.config", "etrmflow.engine")),
]
LEAVES = ["errors", "plan", "results", "clock", "durable", "durations", "jsonpath", "jsontext", "templating",
          "windows"]


@pytest.mark.parametrize(("layer", "forbidden"), FORBIDDEN, ids=lambda v: ".".join(v) if isinstance(v, tuple) else v)
def test_layer_does_not_import_upward(layer: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    offenders = [f"{path.relative_to(PACKAGE)} imports {name}"
                 for path in modules_under(*layer) for name in imports_of(path)
                 if name.startswith(forbidden)]
    assert offenders == []


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_no_other_etrmflow_module(leaf: str) -> None:
    assert imports_of(PACKAGE / f"{leaf}.py") - {"etrmflow"} == set()


def test_every_hookspec_is_documented_and_prefixed() -> None:
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("etrmflow_")]
    assert len(specs) >= 8
    for spec in specs:
        assert spec.__doc__ and len(spec.__doc__.strip()) > 40, spec.__name__
    others = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
              if f.__module__ == hookspecs.__name__ and not name.startswith("etrmflow_")]
    assert others == []


def test_no_module_is_huge() -> None:
    too_long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert too_long == {}


def test_yaml_is_only_loaded_safely() -> None:
    unsafe = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if any(token in p.read_text(encoding="utf-8")
                     for token in ("yaml.load(", "yaml.unsafe_load", "yaml.Loader", "FullLoader"))]
    assert unsafe == []
