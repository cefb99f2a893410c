"""``etrmflow schema``: the packaged JSON Schemas, for editors and for checking artifacts.

The YAML documents' schemas are the ones ``etrmflow validate`` checks with; the artifacts'
schemas describe ``target/plan.json`` and ``target/run_results.json``. Printing or exporting
them lets a YAML language server autocomplete and flag errors while a file is being written.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import click

from etrmflow.cli.main import cli, write_json
from etrmflow.errors import ExitCode

SCHEMA_RESOURCES = {
    "connector": "connector.json",
    "contract": "contract.json",
    "pipeline": "pipeline.json",
    "project": "project.json",
    "plan": "plan.schema.json",
    "run_results": "run_results.schema.json",
}
"""Schema name (as the command takes it) -> file in the ``etrmflow.schemas`` package."""


def packaged_schema(name: str) -> dict[str, Any]:
    """A packaged JSON Schema by name: a document (connector, contract, pipeline, project) or an
    artifact (plan, run_results). KeyError for another name."""
    resource = resources.files("etrmflow.schemas").joinpath(SCHEMA_RESOURCES[name])
    return json.loads(resource.read_text(encoding="utf-8"))


def export_file_name(name: str) -> str:
    """The file an exported schema is written to: ``<name>.schema.json``."""
    return f"{name}.schema.json"


def export_schemas(folder: Path, names: list[str]) -> list[Path]:
    """Write each named schema into ``folder`` (created if missing); the paths written."""
    written = []
    for name in names:
        path = folder / export_file_name(name)
        write_json(path, packaged_schema(name))
        written.append(path)
    return written


@cli.command()
@click.argument("name", required=False, metavar="[NAME]", type=click.Choice(list(SCHEMA_RESOURCES)))
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write the schemas to DIR as <name>.schema.json (all of them, or NAME only) instead of printing.")
def schema(name: str | None, output: Path | None) -> int:
    """Print a JSON Schema (YAML documents or artifacts), or write them all with --output."""
    if output is not None:
        for path in export_schemas(output, [name] if name else list(SCHEMA_RESOURCES)):
            click.echo(f"Wrote {path}")
        return ExitCode.OK
    if name is None:
        raise click.UsageError("give a schema name (" + ", ".join(SCHEMA_RESOURCES) + ") or --output DIR")
    click.echo(json.dumps(packaged_schema(name), indent=2))
    return ExitCode.OK
