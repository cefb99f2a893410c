"""``etrmflow audit``: check and read the hash-chained audit log (logic in ``etrmflow.audit``)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from etrmflow.cli.main import State, cli
from etrmflow.errors import ExitCode

if TYPE_CHECKING:
    from etrmflow.audit import BodyStore, Expectation, Verdict

DEFAULT_LOG = Path("target") / "audit" / "audit.jsonl"
RESULTS_FILE = "run_results.json"
_HASH = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{8,64}")

_log = click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_LOG,
                    show_default=True, help="The audit log file (target/audit/audit.jsonl of the project).")
_bodies_dir = click.option("--bodies-dir", type=click.Path(file_okay=False, path_type=Path),
                           help="The folder of kept bodies (default: bodies/ in the target folder of the log).")


@cli.group()
def audit() -> None:
    """Check and read the audit log: what each vendor sent and what every run did with it."""


@audit.command(name="verify")
@_log
@click.option("--expect-last", metavar="HASH",
              help="The hash the log's last entry had when you recorded it: entries cut from the end are "
                   "then found (default: the last entry target/run_results.json recorded).")
@click.option("--bodies", "check_bodies", is_flag=True,
              help="Also read back every kept raw body (etrmflow run --keep-bodies) and check its hash.")
@_bodies_dir
@click.pass_obj
def verify_command(state: State, log_path: Path, expect_last: str | None, check_bodies: bool,
                   bodies_dir: Path | None) -> int:
    """Check that no entry of the audit log was edited, deleted, inserted, reordered or cut off."""
    from etrmflow.audit import BodyStore, verify

    expect = _expectation(log_path, expect_last)
    store = BodyStore(bodies_dir or _target(log_path) / "bodies") if check_bodies else None
    try:
        verdict = verify(log_path, expect=expect, bodies=store)
    except OSError as exc:
        state.report(f"Error: cannot read the audit log {log_path}: {exc.strerror or exc}",
                     error_type=type(exc).__name__)
        return ExitCode.CONFIG_ERROR
    count = len(verdict.entries)
    if not verdict.intact:
        click.echo(f"{log_path}: NOT intact: {len(verdict.problems)} problem(s) in {count} readable entries")
        for problem in verdict.problems:
            click.echo(f"  {problem}")
        return ExitCode.RUN_FAILED
    last = verdict.entries[-1] if count else None
    tail = f", last seq {last['seq']}, last hash {last['hash']}" if last else ""
    click.echo(f"{log_path}: intact: {count} entr{'y' if count == 1 else 'ies'}{tail}")
    _echo_extra_checks(verdict, expect, store)
    return ExitCode.OK


def _target(log_path: Path) -> Path:
    """The target folder of a log at ``<target>/audit/audit.jsonl``."""
    return log_path.parent.parent


def _expectation(log_path: Path, expect_last: str | None) -> Expectation | None:
    """What the log must still hold at its end: ``--expect-last``, else what run_results.json
    next to it recorded (when it names this log)."""
    from etrmflow.audit import Expectation

    if expect_last is not None:
        if not _HASH.fullmatch(expect_last):
            raise click.BadParameter("give the 64 hex digits of an entry's hash", param_hint="--expect-last")
        return Expectation(last_hash=expect_last)
    results_path = _target(log_path) / RESULTS_FILE
    recorded = _recorded_audit(results_path)
    if recorded is None or (results_path.parent / str(recorded.get("path"))).resolve() != log_path.resolve():
        return None
    return Expectation(last_hash=str(recorded["last_hash"]), entries=int(recorded["entries"]),
                       source=f"{results_path} (run {recorded['run_id']})")


def _recorded_audit(results_path: Path) -> dict[str, Any] | None:
    """The ``audit`` block of a run_results.json, with the run id; None if there is none."""
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        recorded = results.get("audit")
        if isinstance(recorded, dict) and _HASH.fullmatch(str(recorded.get("last_hash"))):
            return {**recorded, "run_id": results.get("run_id"), "entries": int(recorded["entries"])}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        click.echo(f"note: {results_path} cannot be read ({exc}), so the end of the log is not checked "
                   f"against it", err=True)
    return None


def _echo_extra_checks(verdict: Verdict, expect: Expectation | None, store: BodyStore | None) -> None:
    if expect is not None:
        seq = next(entry["seq"] for entry in verdict.entries if entry["hash"] == expect.last_hash)
        click.echo(f"  not cut short: seq {seq}, the last entry recorded by {expect.source}, is there")
    if store is not None:
        kept = verdict.bodies_checked
        click.echo(f"  bodies: {kept} kept bod{'y' if kept == 1 else 'ies'} read back, each matching its hash")


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
    from etrmflow.dlq.listing import printable

    details = " ".join(f"{k}={v}" for k, v in entry.items() if k not in envelope)
    # A logged URL or error holds what a vendor sent: printed, never obeyed by the terminal.
    return printable(f"{entry['seq']:>6} {entry['ts']} {entry['run_id']} {entry['pipeline']} {entry['event']} "
                     f"{details}")


@audit.command(name="body")
@click.argument("sha256")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the body to this file instead of stdout.")
@_bodies_dir
@_log
@click.pass_obj
def body_command(state: State, sha256: str, output_path: Path | None, bodies_dir: Path | None,
                 log_path: Path) -> int:
    """Print a kept raw body byte for byte (by its SHA-256, or the first 8+ hex digits of it)."""
    from etrmflow.audit import BodyStore
    from etrmflow.audit.bodies import file_sha256

    sha256 = sha256.lower()
    if not _PREFIX.fullmatch(sha256):
        raise click.BadParameter("give a body's SHA-256 (64 hex digits, or at least the first 8)",
                                 param_hint="SHA256")
    store = BodyStore(bodies_dir or _target(log_path) / "bodies")
    path = _kept_body(store, sha256, log_path)
    data = path.read_bytes()
    if file_sha256(path) != path.name:
        state.report(f"Error: the kept body {path} does not match its hash: it was changed after it was written",
                     error_type="BodyChanged")
        return ExitCode.RUN_FAILED
    if output_path is None:
        _write_stdout(data)
        return ExitCode.OK
    output_path.write_bytes(data)
    click.echo(f"Wrote {output_path}: {len(data)} bytes, sha256 {path.name}")
    return ExitCode.OK


def _write_stdout(data: bytes) -> None:
    """The bytes as they are; where stdout has no byte stream (captured as text), the same
    bytes decoded losslessly (``surrogateescape``)."""
    sys.stdout.flush()
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))
        return
    binary.write(data)
    binary.flush()


def _kept_body(store: BodyStore, prefix: str, log_path: Path) -> Path:
    """The one kept body whose hash starts with ``prefix``; for a body kept with credentials
    masked, found through its page's entry (its ``body_sha256`` is the vendor's bytes)."""
    found = store.find(prefix)
    if not found:
        masked = _masked_copy(log_path, prefix)
        if masked:
            click.echo(f"note: this page's body was kept with credentials masked (body_kept: redacted), as "
                       f"{masked}: not byte for byte what the vendor sent", err=True)
            found = store.find(masked)
    if not found:
        raise click.BadParameter(f"no body kept in {store.root} has a hash starting with '{prefix}' "
                                 f"(bodies are kept by etrmflow run --keep-bodies)", param_hint="SHA256")
    if len(found) > 1:
        raise click.BadParameter(f"'{prefix}' matches {len(found)} kept bodies; give more digits",
                                 param_hint="SHA256")
    return found[0]


def _masked_copy(log_path: Path, prefix: str) -> str | None:
    """The ``kept_sha256`` of a page whose vendor body hash starts with ``prefix`` and that was
    kept redacted, from the audit log (None if there is none, or no log)."""
    from etrmflow.audit.verify import parse

    try:
        rows, _ = parse(log_path.read_bytes())
    except OSError:
        return None
    for row in rows:
        entry = row.entry
        if (entry["event"] == "page_fetched" and entry.get("body_kept") == "redacted"
                and str(entry.get("body_sha256", "")).startswith(prefix)):
            return str(entry["kept_sha256"])
    return None
