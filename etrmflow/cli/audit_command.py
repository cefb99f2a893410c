"""``etrmflow audit``: check and read the hash-chained audit log (logic in ``etrmflow.audit``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from etrmflow.cli.main import State, cli
from etrmflow.errors import ExitCode

DEFAULT_LOG = Path("target") / "audit" / "audit.jsonl"

_log = click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_LOG,
                    show_default=True, help="The audit log file (target/audit/audit.jsonl of the project).")


@cli.group()
def audit() -> None:
    """Check and read the audit log: what each vendor sent and what every run did with it."""


@audit.command(name="verify")
@_log
@click.pass_obj
def verify_command(state: State, log_path: Path) -> int:
    """Check that no entry of the audit log was edited, deleted, inserted or reordered."""
    from etrmflow.audit import verify

    try:
        verdict = verify(log_path)
    except OSError as exc:
        state.report(f"Error: cannot read the audit log {log_path}: {exc.strerror or exc}",
                     error_type=type(exc).__name__)
        return ExitCode.CONFIG_ERROR
    count = len(verdict.entries)
    if verdict.intact:
        last = verdict.entries[-1] if count else None
        tail = f", last seq {last['seq']}, last hash {last['hash']}" if last else ""
        click.echo(f"{log_path}: intact: {count} entr{'y' if count == 1 else 'ies'}{tail}")
        return ExitCode.OK
    click.echo(f"{log_path}: NOT intact: {len(verdict.problems)} problem(s) in {count} readable entries")
    for problem in verdict.problems:
        click.echo(f"  {problem}")
    return ExitCode.RUN_FAILED


@audit.command(name="show")
@_log
@click.option("--run", "run_id", metavar="RUN_ID", help="Only the entries of this run.")
@click.option("--format", "output", default="table", show_default=True, type=click.Choice(["table", "json"]),
              help="table for people; json: the entries as JSON Lines, as stored.")
@click.pass_obj
def show_command(state: State, log_path: Path, run_id: str | None, output: str) -> int:
    """Print the entries of the audit log (of one run with --run); does not check the chain."""
    from etrmflow.audit.verify import parse

    try:
        rows, _ = parse(log_path.read_bytes())
    except OSError as exc:
        state.report(f"Error: cannot read the audit log {log_path}: {exc.strerror or exc}",
                     error_type=type(exc).__name__)
        return ExitCode.CONFIG_ERROR
    for row in rows:
        entry = row.entry
        if run_id is not None and entry["run_id"] != run_id:
            continue
        click.echo(json.dumps(entry) if output == "json" else _line(entry))
    return ExitCode.OK


def _line(entry: dict[str, object]) -> str:
    envelope = ("seq", "ts", "run_id", "pipeline", "event", "prev", "hash")
    details = " ".join(f"{k}={v}" for k, v in entry.items() if k not in envelope)
    return f"{entry['seq']:>6} {entry['ts']} {entry['run_id']} {entry['pipeline']} {entry['event']} {details}"
