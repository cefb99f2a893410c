"""Two sinks of one run must not fight over one output.

A CSV file, a Parquet folder in ``replace`` mode or a table in ``replace`` mode becomes exactly
what its sink wrote in the run: a second sink of the same run (in the same pipeline or another)
writing there too would leave only one of them, while both report their rows written. A sink
class says what it writes with an optional classmethod::

    @classmethod
    def written_output(cls, options, project_dir) -> tuple[str, bool] | None:
        return identity, replaces_it_as_a_whole   # None: nothing to compare

Outputs are compared by identity (an absolute path, ``path#table``); two sinks may share one
only when neither replaces it (two upserts into one table are fine). A pipeline without a
``dead_letter`` block writes its letters to ``<target>/dead_letter/<pipeline>.jsonl``: that file
is compared too (a CSV sink given that path would replace the letters of the run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from etrmflow.components import Kind
from etrmflow.config.check import issue
from etrmflow.config.yamlfile import format_key_path
from etrmflow.errors import ConfigIssue
from etrmflow.plugins import Registry

__all__ = ["check_shared_outputs"]


def check_shared_outputs(pipelines: list[Any], registry: Registry, project_dir: str,
                         target_dir: Path | None = None) -> list[ConfigIssue]:
    """An issue at every sink (or dead-letter sink) whose output an earlier one of the run also
    writes, when either replaces it as a whole. ``pipelines``: the run's ``ResolvedPipeline``
    objects, in order; ``target_dir``: where default dead letters go (default: ``target``)."""
    defaults = target_dir if target_dir is not None else Path(project_dir) / "target"
    first: dict[str, tuple[bool, str]] = {}
    issues: list[ConfigIssue] = []
    inside = str(Path(project_dir).resolve()) + os.sep
    for resolved in pipelines:
        document = resolved.pipeline.document
        for at, kind, block in _writers(resolved.pipeline.data, defaults):
            output = _written_output(registry, kind, block, project_dir)
            if output is None:
                continue
            identity, replaces = output
            reason = _protected(identity, project_dir, defaults) if replaces else None
            if reason:
                issues.append(issue(
                    document, at, f"{block['type']} {_LABELS[kind]} replaces {_shown(identity, inside)} as a "
                                  f"whole, and that is {reason}: the run would delete it",
                    hint="give the output a path of its own, e.g. target/<pipeline>/..."))
                continue
            where = f"{document.display} {format_key_path(at)} ({block['type']})"
            earlier = first.setdefault(identity, (replaces, where))
            if earlier[1] != where and (replaces or earlier[0]):
                issues.append(issue(
                    document, at,
                    f"{block['type']} {_LABELS[kind]} writes {identity.removeprefix(inside)}, which {earlier[1]} "
                    f"also writes in this run, and {'this sink' if replaces else 'that sink'} replaces it as a "
                    f"whole: only one of them would keep its rows, though both report them written",
                    hint="give each sink its own path or table, or run the pipelines separately"))
    return issues


_LABELS = {Kind.SINK: "sink", Kind.DEAD_LETTER: "dead-letter sink"}


def _writers(data: dict[str, Any], defaults: Path) -> list[tuple[tuple[str | int, ...], Kind, Any]]:
    """Where a pipeline writes: its sinks, then its dead-letter sink (the default one, located
    at the pipeline's name, when it declares none)."""
    found: list[tuple[tuple[str | int, ...], Kind, Any]] = [
        (("sinks", index), Kind.SINK, block) for index, block in enumerate(data.get("sinks") or [])]
    if isinstance(data.get("dead_letter"), dict):
        found.append((("dead_letter",), Kind.DEAD_LETTER, data["dead_letter"]))
    elif "dead_letter" not in data and isinstance(data.get("name"), str):
        default = {"type": "jsonl", "path": str(defaults / "dead_letter" / f"{data['name']}.jsonl")}
        found.append((("dead_letter",), Kind.DEAD_LETTER, default))
    return found


def _shown(identity: str, inside: str) -> str:
    return "." if identity + os.sep == inside else identity.removeprefix(inside)


_PROJECT_FILES = ("connectors", "contracts", "pipelines", "etrmflow.yml")


def _protected(identity: str, project_dir: str, target: Path) -> str | None:
    """What a path replaced as a whole would take with it, if it is not an output's own: the
    project folder (``path: .``), the target folder (checkpoints, the audit log), or the
    project's own files (``path: pipelines``)."""
    if "#" in identity:  # a table
        return None
    path, root = Path(identity), Path(project_dir).resolve()
    if path == root or path in root.parents:
        return "the project folder" if path == root else "a folder holding the project"
    target = target.resolve() if target.is_absolute() else (root / target).resolve()
    if path == target or path in target.parents:
        return "the target folder (checkpoints, audit log, dead letters)"
    for name in _PROJECT_FILES:
        own = root / name
        if path == own or own in path.parents and path.suffix in (".yml", ".yaml"):
            return f"the project's own {name}" if path == own else f"a file of the project's {name}"
    return None


def _written_output(registry: Registry, kind: Kind, block: Any, project_dir: str) -> tuple[str, bool] | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return None
    describe = getattr(registry.get(kind, block["type"]), "written_output", None)
    if describe is None:
        return None
    options = {key: value for key, value in block.items() if key != "type"}
    result: tuple[str, bool] | None = describe(options, project_dir)
    return result
