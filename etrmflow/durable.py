"""Making what was written survive a power cut: fsync of files and of the folders that list them.

A file's data is on disk once the file is synced; its name (a new file, a rename, a removal)
only once its folder is synced too. A checkpoint that says a page is done must not reach the
disk before what the page wrote does, or a resume after a power cut skips rows that are gone.

A leaf module (the standard library only), shared by the sinks, the audit log and the CLI's
artifacts. A folder cannot be opened to sync it everywhere (Windows): there the folder helpers
do nothing, as the file system orders renames itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def fsync_file(path: Path | str) -> None:
    """Sync a file written by code that does not hand its descriptor over (pyarrow's writers)."""
    fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(folder: Path | str) -> None:
    """Sync a folder's entries: the files created, renamed into or removed from it."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directories(folders: Iterable[Path]) -> None:
    """Sync each folder once, however often it is named (a batch of changes, one sync each)."""
    for folder in sorted(set(folders)):
        fsync_directory(folder)


def folders_up_to(folder: Path, top: Path) -> list[Path]:
    """``folder`` and the folders above it up to ``top`` (included): the folders whose entries
    change when a file is put in ``folder`` after its missing parents below ``top`` were made."""
    found = [folder]
    while found[-1] != top and found[-1] != found[-1].parent:
        found.append(found[-1].parent)
    return found


def make_folder(folder: Path) -> None:
    """``mkdir -p`` whose new folders survive a power cut: each new one is synced in its parent."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    fsync_directories(new.parent for new in missing)
