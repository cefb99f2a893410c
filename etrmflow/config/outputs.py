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


def _written_output(registry: Registry, kind: Kind, block: Any, project_dir: str) -> tuple[str, bool] | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return None
    describe = getattr(registry.get(kind, block["type"]), "written_output", None)
    if describe is None:
        return None
    options = {key: value for key, value in block.items() if key != "type"}
    result: tuple[str, bool] | None = describe(options, project_dir)
    return result
