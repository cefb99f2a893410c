"""Two sinks of one run must not fight over one output.

A CSV file, a Parquet folder in ``replace`` mode or a table in ``replace`` mode becomes exactly
what its sink wrote in the run: a second sink of the same run (in the same pipeline or another)
writing there too would leave only one of them, while both report their rows written. A sink
class says what it writes with an optional classmethod::

    @classmethod
    def written_output(cls, options, project_dir) -> tuple[str, bool] | None:
        return identity, replaces_it_as_a_whole   # None: nothing to compare

Outputs are compared by identity (an absolute path, ``path#table``); two sinks may share one
only when neither replaces it (two upserts into one table are fine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from etrmflow.components import Kind
from etrmflow.config.check import issue
from etrmflow.errors import ConfigIssue
from etrmflow.plugins import Registry

__all__ = ["check_shared_outputs"]


def check_shared_outputs(pipelines: list[Any], registry: Registry, project_dir: str) -> list[ConfigIssue]:
    """An issue at every sink whose output an earlier sink of the run also writes, when either
    replaces it as a whole. ``pipelines``: the run's ``ResolvedPipeline`` objects, in order."""
    first: dict[str, tuple[bool, str]] = {}
    issues: list[ConfigIssue] = []
    inside = str(Path(project_dir).resolve()) + os.sep
    for resolved in pipelines:
        document, data = resolved.pipeline.document, resolved.pipeline.data
        for index, block in enumerate(data.get("sinks") or []):
            output = _written_output(registry, block, project_dir)
            if output is None:
                continue
            identity, replaces = output
            where = f"{document.display} sinks[{index}] ({block['type']})"
            earlier = first.setdefault(identity, (replaces, where))
            if earlier[1] != where and (replaces or earlier[0]):
                issues.append(issue(
                    document, ("sinks", index),
                    f"{block['type']} sink writes {identity.removeprefix(inside)}, which {earlier[1]} also writes in this run, and "
                    f"{'this sink' if replaces else 'that sink'} replaces it as a whole: only one of them would "
                    f"keep its rows, though both report them written",
                    hint="give each sink its own path or table, or run the pipelines separately"))
    return issues


def _written_output(registry: Registry, block: Any, project_dir: str) -> tuple[str, bool] | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return None
    cls = registry.get(Kind.SINK, block["type"])
    describe = getattr(cls, "written_output", None)
    if describe is None:
        return None
    options = {key: value for key, value in block.items() if key != "type"}
    result: tuple[str, bool] | None = describe(options, project_dir)
    return result
