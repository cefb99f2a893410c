"""Finding and loading a project: the pipeline file, the connector and contract it names.

Only this module (and ``yamlfile``) touches project files. Everything it returns is plain,
rendered and checked data, ready for ``etrmflow.compile``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etrmflow.components import Kind
from etrmflow.config.check import check_against, check_component, did_you_mean, document_schema
from etrmflow.config.render import RenderContext, render_document
from etrmflow.config.semantics import check_connector_semantics, check_contract_semantics
from etrmflow.config.yamlfile import YamlDocument, load_yaml
from etrmflow.errors import ConfigError, ConfigIssue, IssueCollector, Location
from etrmflow.plugins import Registry

PROJECT_FILE = "etrmflow.yml"
FOLDERS = ("connectors", "contracts", "pipelines")


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """A rendered document and where it came from."""

    data: dict[str, Any]
    document: YamlDocument


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedPipeline:
    pipeline: Loaded
    connector: Loaded
    contract: Loaded


@dataclass(slots=True)
class Project:
    """A project folder: its settings, variables and a cache of loaded documents."""

    root: Path
    name: str
    vars: dict[str, Any]
    target_dir: Path
    registry: Registry
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    render_context: RenderContext = field(init=False)
    _cache: dict[Path, Loaded | list[ConfigIssue]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.render_context = RenderContext(vars=self.vars, environ=self.environ)

    @property
    def secret_defaults(self) -> dict[str, str]:
        return self.render_context.secret_defaults

    def display(self, path: Path) -> str:
        """Paths in messages: relative to the working directory when inside it."""
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)

    def load(self, path: Path, schema: str) -> Loaded | list[ConfigIssue]:
        """Load, render and check one document against its packaged schema (cached)."""
        path = path.resolve()
        if path not in self._cache:
            self._cache[path] = self._load_uncached(path, schema)
        return self._cache[path]

    def _load_uncached(self, path: Path, schema: str) -> Loaded | list[ConfigIssue]:
        try:
            document = load_yaml(path, self.display(path))
        except ConfigError as exc:
            return exc.issues
        if not isinstance(document.data, dict):
            return [ConfigIssue(location=document.locate(()), key_path="",
                                message=f"expected a mapping of keys at the top of the {schema} file")]
        data, issues = render_document(document, self.render_context)
        issues += check_against(document, data, document_schema(schema))
        return issues if issues else Loaded(data=data, document=document)

    def find(self, folder: str, name: str) -> Path | None:
        """The file in ``folder`` declaring ``name``: NAME.yml first, then any file's ``name:``."""
        base = self.root / folder
        for suffix in (".yml", ".yaml"):
            if (base / f"{name}{suffix}").is_file():
                return base / f"{name}{suffix}"
        for candidate in sorted(base.glob("*.y*ml")):
            if _declared_name(candidate) == name:
                return candidate
        return None

    def names(self, folder: str) -> list[str]:
        return sorted(filter(None, (_declared_name(p) for p in (self.root / folder).glob("*.y*ml"))))

    def resolve(self, pipeline_path: Path) -> ResolvedPipeline:
        """Load a pipeline and everything it references; raise ConfigError with every issue."""
        issues = IssueCollector()
        pipeline = self.load(pipeline_path, "pipeline")
        if isinstance(pipeline, list):
            issues.extend(pipeline)
            issues.raise_if_any()
        assert isinstance(pipeline, Loaded)
        _check_pipeline_components(pipeline, self.registry, issues)
        connector = self._reference(pipeline, ("source", "connector"), "connectors", "connector", issues)
        contract = self._reference(pipeline, ("contract",), "contracts", "contract", issues)
        if connector is not None:
            _check_stream_reference(pipeline, connector, issues)
            issues.extend(check_connector_semantics(connector.document, connector.data, self.registry))
        if contract is not None:
            issues.extend(check_contract_semantics(contract.document, contract.data, self.registry))
        issues.raise_if_any()
        assert connector is not None and contract is not None
        return ResolvedPipeline(pipeline=pipeline, connector=connector, contract=contract)

    def _reference(self, pipeline: Loaded, key: tuple[str, ...], folder: str, schema: str,
                   issues: IssueCollector) -> Loaded | None:
        value: Any = pipeline.data
        for part in key:
            value = value[part]
        path = self.find(folder, value)
        if path is None:
            hint = did_you_mean(value, self.names(folder)) or f"no {schema}s found in {folder}/"
            issues.add(pipeline.document.locate(key), ".".join(key),
                       f"unknown {schema} '{value}' (looked in {self.display(self.root / folder)}/)", hint)
            return None
        loaded = self.load(path, schema)
        if isinstance(loaded, list):
            issues.extend(loaded)
            return None
        return loaded


def _declared_name(path: Path) -> str | None:
    """The top-level ``name:`` of a YAML file, read cheaply and forgivingly."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("name:"):
                    return line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"") or None
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _check_pipeline_components(pipeline: Loaded, registry: Registry, issues: IssueCollector) -> None:
    data, document = pipeline.data, pipeline.document
    for index, step in enumerate(data.get("transforms") or []):
        issues.extend(check_component(document, step, ("transforms", index), Kind.TRANSFORM, registry))
    for index, sink in enumerate(data.get("sinks") or []):
        issues.extend(check_component(document, sink, ("sinks", index), Kind.SINK, registry))
    if "dead_letter" in data:
        issues.extend(check_component(document, data["dead_letter"], ("dead_letter",), Kind.DEAD_LETTER, registry))


def _check_stream_reference(pipeline: Loaded, connector: Loaded, issues: IssueCollector) -> None:
    stream = pipeline.data["source"]["stream"]
    streams = connector.data.get("streams") or {}
    if stream not in streams:
        issues.add(pipeline.document.locate(("source", "stream")), "source.stream",
                   f"connector '{connector.data['name']}' has no stream '{stream}'",
                   did_you_mean(stream, streams))


def find_project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding etrmflow.yml or connectors/contracts/."""
    start = start.resolve()
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
        if (candidate / "connectors").is_dir() or (candidate / "contracts").is_dir():
            return candidate
    return None


def open_project(pipeline_path: Path, *, registry: Registry, cli_vars: Mapping[str, Any] | None = None,
                 target_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> Project:
    """The project a pipeline file belongs to, with its settings and the ``--vars`` applied."""
    if not pipeline_path.is_file():
        raise ConfigError(ConfigIssue(location=Location(file=str(pipeline_path)), key_path="",
                                      message="pipeline file not found",
                                      hint="give the path to a pipelines/*.yml file"))
    root = find_project_root(pipeline_path)
    if root is None:
        raise ConfigError(ConfigIssue(
            location=Location(file=str(pipeline_path)), key_path="",
            message="cannot find the project root",
            hint=f"put an {PROJECT_FILE} file, or connectors/ and contracts/ folders, in a parent folder"))
    settings = _project_settings(root)
    variables = {**(settings.get("vars") or {}), **dict(cli_vars or {})}
    target = target_dir or root / settings.get("target_dir", "target")
    return Project(root=root, name=settings.get("name") or root.name, vars=variables,
                   target_dir=target, registry=registry,
                   environ=os.environ if environ is None else environ)


def _project_settings(root: Path) -> dict[str, Any]:
    path = root / PROJECT_FILE
    if not path.is_file():
        return {}
    document = load_yaml(path, str(path))
    data = document.data or {}
    issues = check_against(document, data, document_schema("project"))
    if issues:
        raise ConfigError(issues)
    return data
