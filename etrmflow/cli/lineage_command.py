"""``etrmflow lineage``: where one record key came from and where it went (logic in ``etrmflow.lineage``)."""

from __future__ import annotations

from pathlib import Path

import click

from etrmflow import jsontext
from etrmflow.cli.commands import load
from etrmflow.cli.main import State, cli
from etrmflow.compile import compile_plan
from etrmflow.errors import ExitCode


@cli.command()
@click.argument("pipeline", type=click.Path(exists=False, dir_okay=False, path_type=Path))
@click.argument("key", nargs=-1, required=True)
@click.option("--format", "output", default="table", show_default=True, type=click.Choice(["table", "json"]),
              help="table for people; json: one object, for machines.")
@click.option("--vars", "vars_text", metavar="YAML", help="Variables for var(), as YAML or JSON, as given to the run.")
@click.option("--target-dir", type=click.Path(path_type=Path),
              help="The target folder the runs used (default: <project>/target).")
@click.pass_obj
def lineage(state: State, pipeline: Path, key: tuple[str, ...], output: str, vars_text: str | None,
            target_dir: Path | None) -> int:
    """Every version written and every dead letter of one record KEY, with the vendor request of each.

    KEY is the contract's primary-key values in order (ACME-T-0000001 2), a prefix of them
    (ACME-T-0000001: every version), or name=value pairs (trade_id=ACME-T-0000001).
    Exit 0: found; 1: nothing has this key.
    """
    from etrmflow.lineage import BadKey, parse_key, table, trace

    if pipeline.is_dir():
        raise click.BadParameter("give one pipeline file, not a folder", param_hint="PIPELINE")
    project, resolved = load(state, (pipeline,), vars_text, target_dir)
    plan = compile_plan(project, resolved)
    compiled = plan.pipelines[0]
    try:
        wanted = parse_key(key, compiled.contract.primary_key)
    except BadKey as exc:
        raise click.BadParameter(str(exc), param_hint="KEY") from None
    found = trace(plan, compiled, wanted)
    if output == "json":
        click.echo(jsontext.pretty(found.as_dict()))
    else:
        click.echo(table(found))
    return ExitCode.OK if found.found else ExitCode.RUN_FAILED
