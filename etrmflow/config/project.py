"""Finding and loading a project: the pipeline file, the connector and contract it names.

Only this package touches project files. Everything it returns is plain, rendered and checked
data, ready for ``etrmflow.compile``. Every problem in every file a pipeline reaches is
reported in one go: a schema problem in the pipeline does not hide a typo in its connector.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etrmflow.components import Kind
from etrmflow.config.blocks import check_component
from etrmflow.config.check import check_against, describe, did_you_mean, document_schema
from etrmflow.config.render import RenderContext, render_document
from etrmflow.config.semantics import (
    check_connector_semantics,
    check_contract_semantics,
)
from etrmflow.config.settings import (
    PROJECT_FILE,
    check_pipeline_path,
    display_path,
    find_project_root,
    plain_vars,
    project_settings,
)
from etrmflow.config.yamlfile import YamlDocument, format_key_path, load_yaml
from etrmflow.errors import ConfigError, ConfigIssue, IssueCollector, Location
from etrmflow.plugins import Registry

FOLDERS = ("connectors", "contracts", "pipelines")
_SEMANTICS = {"connector": check_connector_semantics, "contract": check_contract_semantics}

__all__ = ["FOLDERS", "PROJECT_FILE", "Loaded", "Project", "ResolvedPipeline", "find_project_root", "open_project"]


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
    sink_connectors: dict[str, Loaded] = field(default_factory=dict)
    """The connectors the sinks write to (``Sink.connector_option``), by name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Result:
    """A loaded document (None if it could not be read as a mapping) and its problems."""

    loaded: Loaded | None
    issues: list[ConfigIssue]


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
    _cache: dict[Path, _Result] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.render_context = RenderContext(vars=self.vars, environ=self.environ)

    @property
    def secret_defaults(self) -> dict[str, str]:
        return self.render_context.secret_defaults

    def display(self, path: Path) -> str:
        """Paths in messages: relative to the working directory when inside it."""
        return display_path(path)

    def load(self, path: Path, schema: str) -> _Result:
        """Load, render and check one document against its packaged schema (cached)."""
        path = path.resolve()
        if path not in self._cache:
            self._cache[path] = self._load_uncached(path, schema)
        return self._cache[path]

    def _load_uncached(self, path: Path, schema: str) -> _Result:
        try:
            document = load_yaml(path, self.display(path))
        except ConfigError as exc:
            return _Result(loaded=None, issues=exc.issues)
        if not isinstance(document.data, dict):
            return _Result(loaded=None, issues=[_not_a_mapping(document, schema)])
        data, issues = render_document(document, self.render_context)
        issues += _outside(check_against(document, data, document_schema(schema)), issues)
        if not issues and schema in _SEMANTICS:  # deeper checks need a document of the right shape
            issues = _SEMANTICS[schema](document, data, self.registry)
        return _Result(loaded=Loaded(data=data, document=document), issues=issues)

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
        pipeline = self._loaded(self.load(pipeline_path, "pipeline"), issues)
        if pipeline is None:
            issues.raise_if_any()
        assert pipeline is not None
        _check_pipeline_components(pipeline, self.registry, issues, str(self.root))
        connector = self._reference(pipeline, ("source", "connector"), "connectors", "connector", issues)
        contract = self._reference(pipeline, ("contract",), "contracts", "contract", issues)
        if connector is not None:
            _check_stream_reference(pipeline, connector, issues)
        sink_connectors = self._sink_connectors(pipeline, issues)
        issues.raise_if_any()
        assert connector is not None and contract is not None
        return ResolvedPipeline(pipeline=pipeline, connector=connector, contract=contract,
                                sink_connectors=sink_connectors)

    def _sink_connectors(self, pipeline: Loaded, issues: IssueCollector) -> dict[str, Loaded]:
        """The connectors that sinks name in their ``connector_option``, loaded and checked."""
        found: dict[str, Loaded] = {}
        blocks = pipeline.data.get("sinks")
        for index, block in enumerate(blocks if isinstance(blocks, list) else []):
            kind = block.get("type") if isinstance(block, Mapping) else None
            cls = self.registry.get(Kind.SINK, kind) if isinstance(kind, str) else None
            option = getattr(cls, "connector_option", None)
            if option is None or not isinstance(block.get(option), str):
                continue  # not a sink that writes to a connector, or the options check reports it
            loaded = self._reference(pipeline, ("sinks", index, option), "connectors", "connector", issues)
            if loaded is not None:
                found[block[option]] = loaded
        return found

    def _loaded(self, result: _Result, issues: IssueCollector) -> Loaded | None:
        issues.extend(result.issues)
        return result.loaded

    def _reference(self, pipeline: Loaded, key: tuple[str | int, ...], folder: str, schema: str,
                   issues: IssueCollector) -> Loaded | None:
        value: Any = pipeline.data
        for part in key:
            if isinstance(value, list) and isinstance(part, int):
                value = value[part] if part < len(value) else None
            else:
                value = value.get(part) if isinstance(value, Mapping) else None
        if not isinstance(value, str):
            return None  # missing or not a name: the pipeline schema check said so
        path = self.find(folder, value)
        if path is None:
            hint = did_you_mean(value, self.names(folder)) or f"there are no {schema} files yet"
            issues.add(pipeline.document.locate(key), format_key_path(key),
                       f"no {schema} named '{value}' in {self.display(self.root / folder)}/", hint)
            return None
        result = self.load(path, schema)
        issues.extend(result.issues)
        return result.loaded if not result.issues else None


def _outside(found: list[ConfigIssue], rendering: list[ConfigIssue]) -> list[ConfigIssue]:
    """Schema issues not at or below a value whose template failed (it was never rendered)."""
    failed = [issue.key_path for issue in rendering]
    return [issue for issue in found
            if not any(issue.key_path == path or issue.key_path.startswith((path + ".", path + "["))
                       for path in failed)]


def _not_a_mapping(document: YamlDocument, schema: str) -> ConfigIssue:
    required = ", ".join(document_schema(schema).get("required", []))
    if document.data is None:
        return ConfigIssue(location=Location(file=document.display), key_path="",
                           message=f"the file is empty; a {schema} file needs at least: {required}")
    return ConfigIssue(location=document.locate(()), key_path="",
                       message=f"expected a mapping (key: value lines) at the top of a {schema} file, "
                               f"got {describe(document.data)}", hint=f"a {schema} file needs at least: {required}")


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


def _check_pipeline_components(pipeline: Loaded, registry: Registry, issues: IssueCollector, root: str) -> None:
    data, document = pipeline.data, pipeline.document
    for key, kind in (("transforms", Kind.TRANSFORM), ("sinks", Kind.SINK)):
        blocks = data.get(key)
        for index, block in enumerate(blocks if isinstance(blocks, list) else []):
            issues.extend(check_component(document, block, (key, index), kind, registry, project_dir=root))
    if "dead_letter" in data:
        issues.extend(check_component(document, data["dead_letter"], ("dead_letter",), Kind.DEAD_LETTER, registry))


def _check_stream_reference(pipeline: Loaded, connector: Loaded, issues: IssueCollector) -> None:
    source = pipeline.data.get("source")
    stream = source.get("stream") if isinstance(source, Mapping) else None
    streams = connector.data.get("streams") or {}
    if isinstance(stream, str) and stream not in streams:
        issues.add(pipeline.document.locate(("source", "stream")), "source.stream",
                   f"connector '{connector.data['name']}' has no stream '{stream}'",
                   did_you_mean(stream, streams))


def open_project(pipeline_path: Path, *, registry: Registry, cli_vars: Mapping[str, Any] | None = None,
                 target_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> Project:
    """The project a pipeline file belongs to, with its settings and the ``--vars`` applied."""
    check_pipeline_path(pipeline_path)
    return open_project_at(pipeline_path, registry=registry, cli_vars=cli_vars, target_dir=target_dir,
                           environ=environ)


def open_project_at(path: Path, *, registry: Registry, cli_vars: Mapping[str, Any] | None = None,
                    target_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> Project:
    """The project around ``path`` (any file or folder inside it), settings and ``--vars`` applied."""
    root = find_project_root(path)
    if root is None:
        raise ConfigError(ConfigIssue(
            location=Location(file=display_path(path)), key_path="",
            message="cannot find the project root",
            hint=f"put an {PROJECT_FILE} file, or connectors/ and contracts/ folders, in a parent folder"))
    settings = project_settings(root)
    variables = {**(settings.get("vars") or {}), **plain_vars(cli_vars or {})}
    target = target_dir or root / settings.get("target_dir", "target")
    return Project(root=root, name=settings.get("name") or root.name, vars=variables,
                   target_dir=target, registry=registry,
                   environ=os.environ if environ is None else environ)
