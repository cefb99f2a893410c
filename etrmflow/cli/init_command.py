"""``etrmflow init VENDOR``: a project for a new vendor that runs against the sandbox as written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import click

from etrmflow.cli.main import cli
from etrmflow.config.settings import PROJECT_FILE, display_path
from etrmflow.errors import ExitCode

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


def suggest_name(text: str) -> str:
    """The closest valid vendor name: lower case, other characters as ``_``, a letter first."""
    name = re.sub(r"[^a-z0-9_]+", "_", text.strip().lower()).strip("_")
    name = re.sub(r"_+", "_", name)
    return name if name[:1].isalpha() else f"v_{name}" if name else "my_vendor"


def check_vendor(vendor: str) -> str:
    if VENDOR_NAME.match(vendor):
        return vendor
    raise click.BadParameter(
        f"'{vendor}' is not a valid vendor name: it names files, tables and environment variables, so use "
        f"lower-case letters, digits and _, starting with a letter (did you mean '{suggest_name(vendor)}'?)",
        param_hint="VENDOR")


def render(template: str, vendor: str) -> str:
    """Plain substitution: the templates hold Jinja of their own (``{{ env_var(...) }}``)."""
    text = (files("etrmflow") / "scaffold" / template).read_text(encoding="utf-8")
    return text.replace("__VENDOR__", vendor.upper()).replace("__vendor__", vendor)


def planned(root: Path, vendor: str) -> list[tuple[ScaffoldFile, Path]]:
    chosen = [(item, root / item.path.format(vendor=vendor)) for item in SCAFFOLD]
    return [(item, path) for item, path in chosen if not (item.keep_existing and path.exists())]


@cli.command()
@click.argument("vendor")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="The project folder (created if missing; an existing project gains the vendor).")
def init(vendor: str, directory: Path) -> int:
    """Scaffold a connector, contract, pipeline and test for a new vendor, runnable against the sandbox."""
    vendor = check_vendor(vendor)
    targets = planned(directory, vendor)
    existing = [display_path(path) for _, path in targets if path.exists()]
    if existing:
        raise click.ClickException(f"not overwriting existing file(s): {', '.join(existing)}; "
                                   f"nothing was written (choose another VENDOR or --dir)")
    for item, path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(item.template, vendor), encoding="utf-8")
        click.echo(f"created {display_path(path)}")
    click.echo(_next_steps(directory, vendor))
    return ExitCode.OK


def _next_steps(directory: Path, vendor: str) -> str:
    cd = "" if directory.resolve() == Path.cwd().resolve() else f"cd {display_path(directory)} && "
    return (f"Next: {cd}etrmflow run pipelines/{vendor}_trades.yml   (runs against the sandbox vendor)\n"
            f"      etrmflow debug {vendor}; python -m pytest tests/\n"
            f"Point it at the real vendor with {vendor.upper()}_BASE_URL, {vendor.upper()}_CLIENT_ID and "
            f"{vendor.upper()}_CLIENT_SECRET.")
