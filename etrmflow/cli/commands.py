"""The subcommands: validate, compile, run, plugins, sandbox."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from etrmflow.cli.main import State, cli, parse_vars, registry, write_json
from etrmflow.cli.progress import choose_display, showing
from etrmflow.cli.summary import describe_plan, describe_results, plugin_rows
from etrmflow.compile import compile_plan
from etrmflow.config.check import did_you_mean
from etrmflow.config.outputs import check_shared_outputs
from etrmflow.config.preflight import check_secrets
from etrmflow.config.project import (
    Project,
    ResolvedPipeline,
    find_project_root,
    open_project,
)
from etrmflow.config.settings import project_settings
from etrmflow.errors import ConfigError, ConfigIssue, ExitCode, IssueCollector, Location
from etrmflow.plan import Plan
from etrmflow.results import Status

_pipelines = click.argument("pipelines", nargs=-1, required=False, metavar="PIPELINES...",
                            type=click.Path(exists=False, path_type=Path))
_select = click.option("--select", "selectors", multiple=True, metavar="NAME_OR_TAG",
                       help="Only pipelines with this name, or this tag written tag:NAME (repeatable).")
_vars = click.option("--vars", "vars_text", metavar="YAML", help="Variables for var(), as YAML or JSON: '{since: 2025-01-01}'.")
_target = click.option("--target-dir", type=click.Path(path_type=Path),
                       help="Where artifacts and default outputs go (default: <project>/target).")


def _default_paths() -> tuple[Path, ...]:
    """No PIPELINES given: the pipelines/ folder of the project around the working directory."""
    root = find_project_root(Path.cwd())
    if root is None:
        raise click.UsageError("give PIPELINES (files or folders), or run inside a project")
    return (root / "pipelines",)


def _expand(paths: tuple[Path, ...]) -> list[Path]:
    """Pipeline files; a folder stands for every pipeline file in it."""
    files: list[Path] = []
    paths = paths or _default_paths()
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml"))
            if not found:
                raise ConfigError(ConfigIssue(location=Location(file=str(path)), key_path="",
                                              message="no pipeline files (*.yml) in this folder",
                                              hint="give a pipeline file or a folder of them, e.g. pipelines/"))
            files.extend(found)
        else:
            files.append(path)
    return files


def _selected(project: Project, files: list[Path], selectors: tuple[str, ...]) -> list[Path]:
    """The files whose pipeline name or ``tag:`` matches a selector; unreadable files stay in
    so that their problems are reported."""
    if not selectors:
        return files
    chosen, seen = [], set()
    for path in files:
        loaded = project.load(path, "pipeline").loaded
        data = loaded.data if loaded is not None else {}
        names = {str(data.get("name"))} | {f"tag:{tag}" for tag in data.get("tags") or []}
        seen |= names
        if loaded is None or names & set(selectors):
            chosen.append(path)
    unmatched = [s for s in selectors if s not in seen]
    if unmatched:
        raise click.UsageError("; ".join(_no_match(s, seen) for s in unmatched))
    return chosen


def _no_match(selector: str, seen: set[str]) -> str:
    hint = did_you_mean(selector, seen)
    return f"--select '{selector}' matches no pipeline" + (f" ({hint})" if hint else "")


def load(state: State, paths: tuple[Path, ...], vars_text: str | None,
         target_dir: Path | None, selectors: tuple[str, ...] = ()) -> tuple[Project, list[ResolvedPipeline]]:
    """Open the project and load every (selected) pipeline, collecting every config issue of every file."""
    files = _expand(paths)
    project = open_project(files[0], registry=registry(), cli_vars=parse_vars(vars_text), target_dir=target_dir)
    state.target_dir = project.target_dir
    issues = IssueCollector()
    resolved = []
    for path in _selected(project, files, selectors):
        try:
            resolved.append(project.resolve(path))
        except ConfigError as exc:
            issues.extend(exc.issues)
    issues.extend(check_shared_outputs(resolved, project.registry, str(project.root), project.target_dir))
    issues.raise_if_any()
    return project, resolved


@cli.command()
@_pipelines
@_vars
@_target
@_select
@click.pass_obj
def validate(state: State, pipelines: tuple[Path, ...], vars_text: str | None, target_dir: Path | None,
             selectors: tuple[str, ...]) -> int:
    """Check pipelines and everything they reference; fetch nothing."""
    _, resolved = load(state, pipelines, vars_text, target_dir, selectors)
    click.echo(f"{len(resolved)} pipeline(s) valid: " + ", ".join(r.pipeline.data["name"] for r in resolved))
    return ExitCode.OK


def _compile(state: State, pipelines: tuple[Path, ...], vars_text: str | None,
             target_dir: Path | None, selectors: tuple[str, ...] = ()) -> tuple[Project, list[ResolvedPipeline], Plan]:
    project, resolved = load(state, pipelines, vars_text, target_dir, selectors)
    plan = compile_plan(project, resolved)
    write_json(project.target_dir / "plan.json", plan.as_dict())
    return project, resolved, plan


@cli.command(name="compile")
@_pipelines
@_vars
@_target
@_select
@click.pass_obj
def compile_command(state: State, pipelines: tuple[Path, ...], vars_text: str | None, target_dir: Path | None,
                    selectors: tuple[str, ...]) -> int:
    """Compile pipelines into target/plan.json and show the fetch plan."""
    project, _, plan = _compile(state, pipelines, vars_text, target_dir, selectors)
    click.echo(describe_plan(plan))
    click.echo(f"Wrote {project.display(project.target_dir / 'plan.json')}")
    return ExitCode.OK


@cli.command()
@_pipelines
@_vars
@_target
@click.option("--resume", is_flag=True,
              help="Continue each pipeline's failed or killed run from its checkpoint: fetch only what is missing.")
@click.option("--dry-run", is_flag=True,
              help="Show each pipeline's first request, secrets masked; send nothing.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Run up to N pipelines at the same time.")
@click.option("--progress-interval", default=10.0, show_default=True, type=click.FloatRange(min=0),
              metavar="SECONDS", help="Off a terminal, log a progress line per pipeline this often; 0: no progress.")
@click.option("--keep-bodies/--no-keep-bodies", default=None,
              help="Keep every page's raw response body in target/bodies, by SHA-256, as audit evidence "
                   "(default: keep_bodies in etrmflow.yml, else off).")
@_select
@click.pass_obj
def run(state: State, pipelines: tuple[Path, ...], vars_text: str | None, target_dir: Path | None,
        resume: bool, dry_run: bool, threads: int, progress_interval: float, keep_bodies: bool | None,
        selectors: tuple[str, ...]) -> int:
    """Fetch, validate, transform and load. Writes target/plan.json and target/run_results.json."""
    from etrmflow.engine.runner import RunOptions, run_plan
    from etrmflow.secrets import SecretStore

    project, resolved, plan = _compile(state, pipelines, vars_text, target_dir, selectors)
    secrets = SecretStore(environ=os.environ, defaults=project.secret_defaults)
    check_secrets(resolved, secrets)
    if dry_run:
        from etrmflow.cli.preview import describe_first_requests

        click.echo(asyncio.run(describe_first_requests(plan, project.registry, secrets)))
        return ExitCode.OK
    display = choose_display(sys.stderr, os.environ, state.log_format, progress_interval)
    if keep_bodies is None:
        keep_bodies = bool(project_settings(project.root).get("keep_bodies", False))
    options = RunOptions(secrets=secrets, run_id=state.run_id, resume=resume, threads=threads, on_progress=display,
                         keep_bodies=keep_bodies)
    with showing(display):
        results = asyncio.run(run_plan(plan, project.registry, options))
    results.exit_code = max((result.exit_code or ExitCode.RUN_FAILED for result in results.pipelines
                             if result.status is Status.FAILED), default=int(ExitCode.OK))
    click.echo(describe_results(results))  # first: what the run did is shown even if the file cannot be written
    write_json(project.target_dir / "run_results.json", results.as_dict())
    click.echo(f"Wrote {project.display(project.target_dir / 'run_results.json')}")
    return results.exit_code


@cli.command()
def plugins() -> int:
    """List every component type and the plugin it comes from."""
    click.echo(plugin_rows(registry().entries()))
    return ExitCode.OK


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--seed", default=None, type=int, help="Data seed (default 7).")
@click.option("--trades", default=None, type=int, help="Number of trades (default 250).")
@click.option("--fault", "faults", multiple=True, metavar="SPEC",
              help="Inject faults, e.g. 503:every=5,burst=2 or 429:at=3,retry_after=1 (repeatable).")
def sandbox(host: str, port: int, seed: int | None, trades: int | None, faults: tuple[str, ...]) -> int:
    """Serve the built-in sandbox vendor API (for trying connectors; Ctrl-C stops it)."""
    from etrmflow.sandbox import SandboxConfig, serve

    query = [f"fault={spec}" for spec in faults]
    if seed is not None:
        query.append(f"seed={seed}")
    if trades is not None:
        query.append(f"trades={trades}")
    try:
        config = SandboxConfig.from_url("sandbox://cli?" + "&".join(query))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    serve(config, host, port)
    return ExitCode.OK
