"""A step written in Python by the project (``python``).

Trust model: the YAML only names a function; the code is the project's own, a module in the
project folder, as trusted as the project's YAML itself. Nothing from a vendor response or from
YAML text is ever executed. The module is imported when the step is built (by ``etrmflow
validate``, ``compile`` and ``run``, before anything is fetched), with the project folder on the
import path only while importing.
"""

from __future__ import annotations

import copy
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pandas as pd

from etrmflow.components import Transform
from etrmflow.steps.common import StepError, options_object

FUNCTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"

_IMPORTING = threading.Lock()
_IMPORTED_FROM: dict[str, Path] = {}
"""Top-level project modules this step imported, and the project folder each came from."""


class PythonStep(Transform):
    """Apply a Python function of the project to each batch: ``function(frame)``, or
    ``function(frame, options)`` when ``options`` is given. It must return a DataFrame.

    ``function`` is ``module:function``; the module is a file (``steps.py``) or a package
    (``mysteps/enrich.py`` as ``mysteps.enrich``) in the project folder. It is imported when the
    step is built, so ``etrmflow validate`` reports a missing module, a syntax error or a missing
    function before anything is fetched. A module named like an installed one (``json``,
    ``pandas``) is refused: rename it. Import what the module needs at its top: the project
    folder is on the import path only while it is imported.

    Trust: this runs the project's own code, exactly as trusted as its YAML; YAML and vendor data
    only ever name a function, never carry code.

    Example::

        - {type: python, function: "steps:add_book", options: {default_book: POWER-DE}}
    """

    type_name: ClassVar[str] = "python"
    options_schema: ClassVar[dict[str, Any]] = options_object({
        "function": {"type": "string", "pattern": FUNCTION_PATTERN,
                     "description": "module:function, the module in the project folder (dots for packages)."},
        "options": {"type": "object", "description": "Passed to the function as its second argument (a copy "
                                                     "for each batch)."},
    }, ["function"])

    def __init__(self, options: Mapping[str, Any], *, project_dir: str = ".") -> None:
        super().__init__(options, project_dir=project_dir)
        self.function = load_function(options["function"], Path(project_dir))
        self.arguments = options.get("options")
        _check_signature(self.function, options["function"], with_options=self.arguments is not None)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.arguments is None:
            result = self.function(frame)
        else:
            result = self.function(frame, copy.deepcopy(self.arguments))
        if not isinstance(result, pd.DataFrame):
            raise StepError(f"python: {self.options['function']} returned {type(result).__name__}, not a "
                            f"DataFrame; return the (new or changed) frame")
        return result


def load_function(spec: str, project_dir: Path) -> Callable[..., Any]:
    """The function named ``module:function``, its module imported from ``project_dir``."""
    name, _, attribute = spec.partition(":")
    if attribute.startswith("__"):
        raise StepError(f"{spec}: names starting with '__' are Python internals, not the project's functions")
    with _IMPORTING:
        module = _import(name, project_dir.resolve())
    function = getattr(module, attribute, None)
    if function is None:
        raise StepError(f"module {name!r} ({module.__file__}) has no {attribute!r}")
    if not callable(function):
        raise StepError(f"{spec} is {type(function).__name__} {function!r:.40}, not a function")
    return function  # type: ignore[no-any-return]


def _import(name: str, root: Path) -> ModuleType:
    top = name.split(".")[0]
    importlib.invalidate_caches()  # the file may be newer than the import system's directory caches
    if importlib.machinery.PathFinder.find_spec(top, [str(root)]) is None:
        raise StepError(f"no module {top!r} in the project folder {root} "
                        f"(looked for {top}.py and {top}/__init__.py)")
    _refuse_taken_name(top, root)
    loaded = sys.modules.get(top)
    if loaded is not None and not _inside(loaded, root):  # ours, imported from another project folder
        for module_name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[module_name]
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - a syntax error, a failing import, anything the module raises
        raise StepError(f"importing {name!r} from {root} failed{_where(exc)}: "
                        f"{type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(root))
    _refuse_shadowing(set(sys.modules) - before, root)
    _IMPORTED_FROM[top] = root
    return module


def _refuse_shadowing(added: set[str], root: Path) -> None:
    """A project file the step's module imported in place of a standard or installed module of
    its name (``mailbox.py`` for ``import mailbox``): it would stay that module for the whole
    process, etrmflow's own imports included. Undone, and refused."""
    for name in sorted(added):
        module = sys.modules.get(name)
        if "." in name or module is None or not _inside(module, root):
            continue
        others = [entry for entry in sys.path if entry and Path(entry).resolve() != root]
        spec = None if name in sys.stdlib_module_names else importlib.machinery.PathFinder.find_spec(name, others)
        if name in sys.stdlib_module_names or spec is not None:
            for loaded in added:
                sys.modules.pop(loaded, None)
            where = "the standard library" if spec is None else spec.origin
            raise StepError(f"the project's module {name!r} ({module.__file__}) would replace {name} from {where} "
                            f"for the whole run; rename the project's {name}")


def _where(exc: BaseException) -> str:
    """`` at file:line`` of the innermost frame, unless the message already says where (syntax errors)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) or not frames:
        return ""
    return f" at {frames[-1].filename}:{frames[-1].lineno}"


def _refuse_taken_name(top: str, root: Path) -> None:
    """A project module must not shadow (or be shadowed by) an installed or standard module."""
    if top in _IMPORTED_FROM:
        return
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        where: str | None = "the standard library"
    else:
        loaded = sys.modules.get(top)
        spec = None if loaded is not None else importlib.util.find_spec(top)
        origin = getattr(loaded, "__file__", None) or (spec.origin if spec else None)
        where = origin if origin and not _inside_path(Path(origin), root) else None
    if where is not None:
        raise StepError(f"the module name {top!r} is already taken by {where}; rename the project's "
                        f"{top} module")


def _inside(module: ModuleType, root: Path) -> bool:
    origin = getattr(module, "__file__", None)
    return origin is not None and _inside_path(Path(origin), root)


def _inside_path(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def _check_signature(function: Callable[..., Any], spec: str, *, with_options: bool) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some callables do not describe themselves; the call will tell
        return
    arguments = (None, None) if with_options else (None,)
    try:
        signature.bind(*arguments)
    except TypeError:
        wanted = "function(frame, options)" if with_options else "function(frame)"
        parameters = ", ".join(signature.parameters)
        raise StepError(f"{spec}({parameters}) cannot be called as {wanted}"
                        + ("; remove `options` or add an options parameter" if with_options else "")) from None
