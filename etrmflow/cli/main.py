"""Command-line entry point. The one place where errors become exit codes.

Exit codes:
  0    success (invalid records, if any, were quarantined within policy)
  1    run failed: a fetch or write failed for good (a full disk too), or a quarantine threshold was breached
  2    configuration error, missing secret or credentials the vendor refused: nothing was fetched
  3    internal error: a bug; a crash log was written to the target folder
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

import click

from etrmflow import __version__
from etrmflow.config.yamlfile import parse_vars_text
from etrmflow.durable import replace_file
from etrmflow.errors import (
    ConfigError,
    EtrmflowError,
    ExitCode,
    StorageError,
    write_failure,
)
from etrmflow.plugins import PluginError, Registry
from etrmflow.secrets import redact

EXIT_CODES_HELP = """\b
Exit codes:
  0    success (invalid records quarantined within policy)
  1    run failed (fetch or write failed, disk full, or a quarantine threshold breached)
  2    configuration error, missing secret or refused credentials; nothing fetched
  3    internal error (crash log in the target folder)
  130  interrupted
"""

log = logging.getLogger("etrmflow")


class State:
    """Options shared by every command."""

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:16]
        self.target_dir: Path | None = None
        self.crash_dir = Path("target")
        self.log_format = "text"

    def report(self, message: str, **fields: Any) -> None:
        """An error for the person or machine reading stderr: plain text, or a JSON log line."""
        if self.log_format == "json":
            log.error(message, extra=fields)
        else:
            click.echo(redact(message), err=True)


def parse_vars(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return parse_vars_text(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--vars") from None


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="etrmflow")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one JSON object per log line, for machines.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str) -> None:
    """etrmflow: vendor and market API ingestion for energy trading, declared in YAML."""
    from etrmflow.cli.logs import configure_logging

    state = ctx.ensure_object(State)
    state.log_format = log_format
    configure_logging(level=log_level, fmt=log_format, run_id=state.run_id)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with a documented code."""
    sys.exit(run_cli(argv))


def run_cli(argv: list[str] | None = None) -> int:
    state = State()
    try:
        code = cli.main(args=argv, prog_name="etrmflow", standalone_mode=False, obj=state)
        return int(code or 0)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return ExitCode.CONFIG_ERROR
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Interrupted.", err=True)
        return ExitCode.INTERRUPTED
    except ConfigError as exc:
        _report_config_error(state, exc)
        return ExitCode.CONFIG_ERROR
    except PluginError as exc:
        state.report(f"Plugin error: {exc}", error_type="PluginError")
        return ExitCode.CONFIG_ERROR
    except EtrmflowError as exc:
        state.report(f"Error: {exc}", error_type=type(exc).__name__)
        return exc.exit_code
    except Exception:  # a bug: say so, keep the evidence, never show a secret
        return _crash(state)


def _report_config_error(state: State, exc: ConfigError) -> None:
    for issue in exc.issues:
        location = issue.location
        state.report(str(issue), error_type=type(exc).__name__, file=location.file, line=location.line,
                     column=location.column, key_path=issue.key_path)
    count = len(exc.issues)
    state.report(f"{count} problem{'s' if count != 1 else ''} found; nothing was fetched.")


def _crash(state: State) -> int:
    text = redact(traceback.format_exc())
    folder = state.target_dir or state.crash_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "crash.log"
        path.write_text(text, encoding="utf-8")
        where = f"; details in {path}"
    except OSError:
        where = ""
    last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
    state.report(f"Internal error: {last}{where}. This is a bug in etrmflow or a plugin; please report it "
                 f"with the crash log.", error_type="InternalError")
    return ExitCode.INTERNAL_ERROR


def write_json(path: Path, data: Any) -> None:
    """Write an artifact atomically, with any secret masked. A full disk or a path in the way
    is a StorageError (exit 1) that names the file, never a crash; the old file stays as it was."""
    try:
        replace_file(path, redact(json.dumps(data, indent=2, default=str)) + "\n")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: " + write_failure(
            exc, "run the command again (`etrmflow run --resume` continues the pipelines that did not "
                 "finish; their checkpoints, outputs and dead letters are as the run left them)")) from exc


def registry() -> Registry:
    return Registry.default()


from etrmflow.cli import commands  # noqa: E402,F401  (registers the subcommands)
from etrmflow.cli import dlq_command  # noqa
from etrmflow.cli import test_command  # noqa: E402,F401  (registers `etrmflow test`)
from etrmflow.cli import schema_command  # noqa: E402,F401  (registers `etrmflow schema`)
from etrmflow.cli import audit_command  # noqa: E402,F401  (registers `etrmflow audit`)
from etrmflow.cli import init_command  # noqa: E402,F401  (registers `etrmflow init`)
from etrmflow.cli import debug_command  # noqa: E402,F401  (registers `etrmflow debug`)
from etrmflow.cli import lineage_command  # noqa: E402,F401  (registers `etrmflow lineage`)
