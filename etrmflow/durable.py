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


def replace_file(path: Path, text: str) -> None:
    """Put ``text`` at ``path`` atomically and durably: written to a temporary file beside it and
    synced, renamed over ``path``, the folder synced. A reader, or a power cut, finds the old
    file or the new one, never a cut one. OSError as raised; the temporary file is removed."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        make_folder(path.parent)
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # a power cut after the rename must not leave an empty file
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass  # a folder in the way stays; the caller reports the first failure
        raise
