"""Publishing a staged Parquet dataset piece by piece, for the append and replace_partition modes.

``replace`` swaps the whole output folder in (``common.swap_in``). The other two modes keep
the folder and move pieces of the staging folder into it when the run succeeds:

* ``append`` moves each part file to the same place in the output. Parts are named by batch
  id (a hash of the page), so the part of a batch loaded before is replaced, not doubled.
* ``replace_partition`` moves each partition folder this run wrote (``day=2025-03-30`` or
  ``area=DE/day=2025-03-30``, as deep as ``partition_by``) into the output, in place of the
  folder of the same partition. The old folder is first renamed aside, into
  ``<output>.replaced-<run_id>/``, outside the dataset so that no reader sees both. A crash
  between the two renames leaves the old folder there and none in the output:
  ``restore_replaced`` puts it back when the next run opens.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from etrmflow.durable import folders_up_to, fsync_directories
from etrmflow.errors import SinkError
from etrmflow.sinks.common import remove

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("etrmflow.sink")

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
"""The folder pyarrow writes the records without a partition value into (``venue=__HIVE_DEFAULT_PARTITION__``),
and which pyarrow, pandas, Spark and Hive read back as null, percent-encoded or not."""


def replaced_path(target: Path, run_id: str) -> Path:
    return target.with_name(f"{target.name}.replaced-{run_id}")


def partition_folders(root: Path, depth: int) -> list[Path]:
    """The partition folders under ``root`` at ``depth`` (``key=value`` per level), relative."""
    pattern = "/".join(["*=*"] * depth)
    return sorted(p.relative_to(root) for p in root.glob(pattern) if p.is_dir())


def publish_parts(staging: Path, target: Path) -> None:
    """Move every part file of ``staging`` to the same place under ``target``."""
    touched = {target.parent}  # the renames are durable once every folder they changed is synced
    for part in sorted(staging.rglob("part-*.parquet")):
        destination = target / part.relative_to(staging)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, destination)
        touched.update(folders_up_to(destination.parent, target))  # new partition folders too
    fsync_directories(touched)


def publish_partitions(staging: Path, target: Path, depth: int, run_id: str) -> None:
    """Put each partition folder of ``staging`` in place of the same partition under ``target``."""
    aside = replaced_path(target, run_id)
    touched = {target.parent, target}
    for relative in partition_folders(staging, depth):
        new, home = staging / relative, target / relative
        if home.exists():
            (aside / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(home, aside / relative)
        home.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, home)
        touched.update(folders_up_to(home.parent, target))
    fsync_directories(touched)
    remove(aside)


def restore_replaced(target: Path) -> None:
    """Put back a partition folder that a crashed publish had renamed aside and not replaced."""
    for aside in sorted(target.parent.glob(f"{glob.escape(target.name)}.replaced-*")):
        restored: set[Path] = set()
        for folder in sorted({part.parent for part in aside.rglob("part-*.parquet")}):
            home = target / folder.relative_to(aside)
            if home.exists():
                continue  # its replacement made it in: the old folder goes with ``aside``
            log.warning("restoring %s, left aside by an interrupted run, to %s", folder, home)
            home.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder, home)
            restored.update([target.parent, *folders_up_to(home.parent, target)])
        fsync_directories(restored)  # back in place on disk before what is left aside goes
        remove(aside)


_OUR_FILE = re.compile(r"(\.rewriting-)?part-[^/]+\.parquet(\.tmp)?")
"""Part files (and the temporary copies a killed write or rewrite leaves): all a dataset that
etrmflow publishes holds, besides ``key=value`` partition folders, in every version so far."""
_PARTITION_FOLDER = re.compile(r"[^=]+=.*")
_SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
"""What a file browser leaves in any folder it shows: no one's data."""


def foreign_entries(target: Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` + 1 entries under an existing output folder (relative paths) that are
    not part of a Parquet dataset etrmflow wrote: publishing would delete or bury them.

    A symbolic link inside it is foreign, whatever its name (what it points to is not ours)."""
    found: list[str] = []
    pending = [target] if target.is_dir() else []
    while pending and len(found) <= limit:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False) and _PARTITION_FOLDER.fullmatch(entry.name):
                    pending.append(Path(entry.path))
                elif not (entry.is_file(follow_symlinks=False)
                          and (_OUR_FILE.fullmatch(entry.name) or entry.name in _SYSTEM_FILES)):
                    found.append(str(Path(entry.path).relative_to(target)) + ("/" if entry.is_dir() else ""))
    return sorted(found)[:limit + 1]


def refuse_foreign(target: Path, what: str) -> None:
    """Raise SinkError when ``target`` holds anything a Parquet dataset etrmflow wrote does not."""
    if target.exists() and not target.is_dir():
        raise SinkError(f"{what}: {target} is a file, and the parquet sink writes a folder there: give the "
                        f"sink a path of its own, or move the file away")
    strangers = foreign_entries(target)
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise SinkError(f"{what}: {target} is a folder that holds what a Parquet dataset etrmflow "
                        f"writes never holds ({shown}); publishing there would delete or bury "
                        f"them. Give the sink a folder of its own (path:), or move those files away")


def unpartitioned_entries(target: Path, first_column: str) -> list[str]:
    """Entries of an existing output that are not ``<first_column>=...`` partition folders."""
    if not target.is_dir():
        return []
    return sorted(entry.name for entry in target.iterdir()
                  if not (entry.is_dir() and entry.name.startswith(f"{first_column}=")))


def refuse_null_marker(table: pa.Table, columns: list[str]) -> None:
    """Raise ValueError when a partition column holds the text ``HIVE_NULL``: its records would
    go into the folder of the records without a value and be read back as null, and in
    ``replace_partition`` mode that folder's records would be replaced by them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in columns:
        values = table.column(column)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            continue  # only text can be that text
        count = pc.sum(pc.equal(values, HIVE_NULL)).as_py() or 0
        if count:
            raise ValueError(f"partition column {column} holds the text '{HIVE_NULL}' in {count} "
                             f"record{'s' if count != 1 else ''}: that is the name of the folder of the records "
                             f"without a {column}, which readers (pyarrow, pandas, Spark, Hive) read back as "
                             f"empty, so these values would be lost, and the folder's records replaced by them; "
                             f"give them another value in a step (derive), or partition by another column")
