"""The project around a pipeline file: its root folder, etrmflow.yml and the --vars given."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from etrmflow.config.check import check_against, describe, did_you_mean, document_schema
from etrmflow.config.yamlfile import load_yaml
from etrmflow.errors import ConfigError, ConfigIssue, Location

PROJECT_FILE = "etrmflow.yml"


def display_path(path: Path) -> str:
    """Paths in messages: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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


def check_pipeline_path(path: Path) -> None:
    """Raise ConfigError unless ``path`` is a file, naming a close file name when there is one."""
    if path.is_file():
        return
    shown = display_path(path)
    if path.is_dir():
        raise ConfigError(ConfigIssue(location=Location(file=shown), key_path="",
                                      message="is a folder with no pipeline files (*.yml, *.yaml) in it"))
    folder = path.parent
    names = sorted(p.name for p in folder.glob("*.y*ml")) if folder.is_dir() else []
    hint = did_you_mean(path.name, names) if names else ""
    if not hint.startswith("did"):
        hint = "give the path to a pipeline file, e.g. pipelines/trades.yml"
    raise ConfigError(ConfigIssue(location=Location(file=shown), key_path="", message="pipeline file not found",
                                  hint=hint))


def project_settings(root: Path) -> dict[str, Any]:
    """etrmflow.yml at ``root`` (checked), or {} when there is none."""
    path = root / PROJECT_FILE
    if not path.is_file():
        return {}
    document = load_yaml(path, display_path(path))
    if document.data is None:
        return {}
    if not isinstance(document.data, dict):
        raise ConfigError(ConfigIssue(location=document.locate(()), key_path="",
                                      message=f"expected a mapping (key: value lines) at the top of {PROJECT_FILE}, "
                                              f"got {describe(document.data)}"))
    issues = check_against(document, document.data, document_schema("project"))
    if issues:
        raise ConfigError(issues)
    return document.data


def plain_vars(values: Mapping[str, Any]) -> dict[str, Any]:
    """``--vars`` values as project files would hold them: dates and times stay ISO strings."""
    return {str(key): _plain(value) for key, value in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return plain_vars(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
