"""``etrmflow dlq``: list, show and replay a pipeline's dead letters (logic in ``etrmflow.dlq``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from etrmflow import jsontext
from etrmflow.cli.commands import load
from etrmflow.cli.main import State, cli, write_json
from etrmflow.compile import compile_plan
from etrmflow.errors import ExitCode

if TYPE_CHECKING:
    from etrmflow.config.project import Project
    from etrmflow.dlq import StoredLetter
    from etrmflow.plan import PipelinePlan, Plan

RESULTS_FILE = "dlq_replay_results.json"

_pipeline = click.argument("pipeline", type=click.Path(exists=False, dir_okay=False, path_type=Path))
_vars = click.option("--vars", "vars_text", metavar="YAML",
                     help="Variables for var(), as YAML or JSON, as given to the run.")
_target = click.option("--target-dir", type=click.Path(path_type=Path),
                       help="The target folder the runs used (default: <project>/target).")


def _plan(state: State, pipeline: Path, vars_text: str | None,
          target_dir: Path | None) -> tuple[Project, Plan, PipelinePlan]:
    """The pipeline as it compiles now. Writes no plan.json: that file belongs to compile and run."""
    if pipeline.is_dir():
        raise click.BadParameter("give one pipeline file, not a folder", param_hint="PIPELINE")
    project, resolved = load(state, (pipeline,), vars_text, target_dir)
    plan = compile_plan(project, resolved)
    return project, plan, plan.pipelines[0]


def _letters(plan: Plan, pipeline: PipelinePlan) -> tuple[str, list[StoredLetter]]:
    from etrmflow.dlq import open_store

    store = open_store(plan, pipeline)
    return store.describe(), store.letters()


@cli.group()
def dlq() -> None:
    """List, show and replay a pipeline's dead letters (quarantined records)."""


@dlq.command(name="list")
@_pipeline
@click.option("--status", default="open", show_default=True, type=click.Choice(["open", "resolved", "all"]),
              help="Which letters: open (not yet loaded), resolved (loaded by a replay), or all.")
@click.option("--format", "output", default="table", show_default=True, type=click.Choice(["table", "json"]),
              help="table for people; json: one array of objects, for machines.")
@_vars
@_target
@click.pass_obj
def list_command(state: State, pipeline: Path, status: str, output: str, vars_text: str | None,
                 target_dir: Path | None) -> int:
    """One line per dead letter: record hash, key, contract version, first violation, status."""
    from etrmflow.dlq import row, select, table
    from etrmflow.dlq.listing import footer

    _, plan, compiled = _plan(state, pipeline, vars_text, target_dir)
    where, letters = _letters(plan, compiled)
    rows = [row(letter, compiled.contract.primary_key) for letter in select(letters, status)]
    if output == "json":
        click.echo(jsontext.pretty(rows))
    else:
        if rows:
            click.echo(table(rows))
        click.echo(footer(letters, len(rows), where))
    return ExitCode.OK


@dlq.command()
@_pipeline
@click.argument("record_hash_prefix")
@_vars
@_target
@click.pass_obj
def show(state: State, pipeline: Path, record_hash_prefix: str, vars_text: str | None,
         target_dir: Path | None) -> int:
    """Print the dead letter of one record in full, as pretty JSON."""
    from etrmflow.dlq import find

    _, plan, compiled = _plan(state, pipeline, vars_text, target_dir)
    where, letters = _letters(plan, compiled)
    found = find(letters, record_hash_prefix)
    records = sorted({letter.record_sha256 for letter in found})
    if not records:
        raise click.BadParameter(f"no dead letter in {where} has a record hash starting with "
                                 f"'{record_hash_prefix}'", param_hint="RECORD_HASH_PREFIX")
    if len(records) > 1:
        raise click.BadParameter(f"'{record_hash_prefix}' matches {len(records)} records "
                                 f"({', '.join(r[:16] for r in records[:5])}...); give more characters",
                                 param_hint="RECORD_HASH_PREFIX")
    shown = [letter.as_dict() for letter in found]
    click.echo(jsontext.pretty(shown[0] if len(shown) == 1 else shown))
    return ExitCode.OK


@dlq.command()
@_pipeline
@click.option("--dry-run", is_flag=True,
              help="Re-validate and report what would be written and resolved; write nothing.")
@_vars
@_target
@click.pass_obj
def replay(state: State, pipeline: Path, dry_run: bool, vars_text: str | None, target_dir: Path | None) -> int:
    """Re-validate open dead letters with the current contract and load those that now pass."""
    from etrmflow.dlq import replay as replay_letters
    from etrmflow.dlq import summary
    from etrmflow.secrets import SecretStore

    project, plan, compiled = _plan(state, pipeline, vars_text, target_dir)
    secrets = SecretStore(environ=os.environ, defaults=project.secret_defaults)  # as a run's sinks get them
    result = replay_letters(plan, compiled, project.registry, run_id=state.run_id, dry_run=dry_run,
                            secrets=secrets)
    click.echo(summary(result))
    if not dry_run:
        path = project.target_dir / RESULTS_FILE
        write_json(path, result.as_dict())
        click.echo(f"Wrote {project.display(path)}")
    return result.exit_code
