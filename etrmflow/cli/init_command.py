"""``etrmflow init VENDOR``: a project for a new vendor that runs against the sandbox as written."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import click

from etrmflow.cli.main import cli
from etrmflow.config.settings import PROJECT_FILE, display_path
from etrmflow.errors import ExitCode, StorageError, write_failure

VENDOR_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaffoldFile:
    """One file ``init`` writes: its template and where it goes (``{vendor}`` filled in)."""

    template: str
    path: str
    keep_existing: bool = False
    """The project file is shared by every vendor: an existing one is kept, not refused."""


SCAFFOLD = (
    ScaffoldFile(template="etrmflow.yml.tmpl", path=PROJECT_FILE, keep_existing=True),
    ScaffoldFile(template="connector.yml.tmpl", path="connectors/{vendor}.yml"),
    ScaffoldFile(template="contract.yml.tmpl", path="contracts/{vendor}_trade.yml"),
    ScaffoldFile(template="pipeline.yml.tmpl", path="pipelines/{vendor}_trades.yml"),
    ScaffoldFile(template="test_vendor.py.tmpl", path="tests/test_{vendor}.py"),
)


NAME_MAX = 255
"""The bytes a file or folder name may have on the file systems etrmflow runs on (ext4, APFS, NTFS)."""
LONGEST_FILE = max((item.path for item in SCAFFOLD if "{vendor}" in item.path), key=lambda path: len(Path(path).name))
MAX_VENDOR_LENGTH = NAME_MAX - len(Path(LONGEST_FILE).name.replace("{vendor}", ""))
"""A longer vendor name would make a file name the file system refuses, half-way through writing."""


def suggest_name(text: str) -> str:
    """The closest valid vendor name: lower case, other characters as ``_``, a letter first."""
    name = re.sub(r"[^a-z0-9_]+", "_", text.strip().lower()).strip("_")
    name = re.sub(r"_+", "_", name)
    return name if name[:1].isalpha() else f"v_{name}" if name else "my_vendor"


def check_vendor(vendor: str) -> str:
    if not VENDOR_NAME.match(vendor):
        raise click.BadParameter(
            f"{vendor!r} is not a valid vendor name: it names files, tables and environment variables, so use "
            f"lower-case letters, digits and _, starting with a letter (did you mean '{suggest_name(vendor)}'?)",
            param_hint="VENDOR")
    if len(vendor) > MAX_VENDOR_LENGTH:
        raise click.BadParameter(
            f"a vendor name of {len(vendor)} characters is too long: it goes into file names "
            f"({LONGEST_FILE.format(vendor='VENDOR')}), which file systems allow {NAME_MAX} bytes, so use at "
            f"most {MAX_VENDOR_LENGTH} characters", param_hint="VENDOR")
    return vendor


class ProjectFolder(click.Path):
    """``--dir``: a path the file system can make, checked before click looks it up (``os.stat``
    raises on a NUL) and before anything is written."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, str):
            problem = folder_problem(value)
            if problem:
                self.fail(problem, param, ctx)
        return super().convert(value, param, ctx)


def folder_problem(path: str) -> str | None:
    """Why no file system could make ``path``, or None. An empty path would silently mean ``.``."""
    if not path:
        return "'' is empty: name the project folder, or leave --dir out for the current folder"
    if "\0" in path:
        return f"{path!r} holds a NUL character, which no file system allows in a name"
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            return (f"'{part[:20]}...' ({size} bytes) is longer than the {NAME_MAX} bytes file systems allow "
                    f"a folder name")
    return None


def render(template: str, vendor: str) -> str:
    """Plain substitution: the templates hold Jinja of their own (``{{ env_var(...) }}``)."""
    text = (files("etrmflow") / "scaffold" / template).read_text(encoding="utf-8")
    return text.replace("__VENDOR__", vendor.upper()).replace("__vendor__", vendor)


def planned(root: Path, vendor: str) -> list[tuple[ScaffoldFile, Path]]:
    chosen = [(item, root / item.path.format(vendor=vendor)) for item in SCAFFOLD]
    return [(item, path) for item, path in chosen if not (item.keep_existing and path.exists())]


@cli.command()
@click.argument("vendor")
@click.option("--dir", "directory", type=ProjectFolder(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="The project folder (created if missing; an existing project gains the vendor).")
def init(vendor: str, directory: Path) -> int:
    """Scaffold a connector, contract, pipeline and test for a new vendor, runnable against the sandbox."""
    vendor = check_vendor(vendor)
    targets = planned(directory, vendor)
    existing = [display_path(path) for _, path in targets if path.exists()]
    if existing:
        raise click.ClickException(f"not overwriting existing file(s): {', '.join(existing)}; "
                                   f"nothing was written (choose another VENDOR or --dir)")
    blocked = sorted({display_path(folder) for _, path in targets for folder in path.parents
                      if folder.exists() and not folder.is_dir()})
    if blocked:
        raise click.ClickException(f"not a folder: {', '.join(blocked)}, where the project's files go; nothing "
                                   f"was written (move it, or choose another --dir)")
    _write(targets, vendor)
    click.echo(_next_steps(directory, vendor))
    return ExitCode.OK


def _write(targets: list[tuple[ScaffoldFile, Path]], vendor: str) -> None:
    """Write every file or none: a half-made project would make the next ``init`` refuse to overwrite."""
    done: list[Path] = []
    for item, path in targets:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            done.append(path)  # before the write: a cut file is ours to remove too
            path.write_text(render(item.template, vendor), encoding="utf-8")
        except OSError as exc:
            for made in done:
                with contextlib.suppress(OSError):
                    made.unlink(missing_ok=True)
            raise StorageError(f"cannot write {display_path(path)}: "
                               f"{write_failure(exc, 'run `etrmflow init` again')}; nothing was kept (the files "
                               f"written before it were removed)") from exc
    for path in done:
        click.echo(f"created {display_path(path)}")


def _next_steps(directory: Path, vendor: str) -> str:
    cd = "" if directory.resolve() == Path.cwd().resolve() else f"cd {display_path(directory)} && "
    return (f"Next: {cd}etrmflow run pipelines/{vendor}_trades.yml   (runs against the sandbox vendor)\n"
            f"      etrmflow debug {vendor}; python -m pytest tests/\n"
            f"Point it at the real vendor with {vendor.upper()}_BASE_URL, {vendor.upper()}_CLIENT_ID and "
            f"{vendor.upper()}_CLIENT_SECRET.")
