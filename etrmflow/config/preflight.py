"""Before anything is fetched: every secret a pipeline needs must be resolvable."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from etrmflow.config.project import Loaded, ResolvedPipeline
from etrmflow.config.yamlfile import KeyPath, format_key_path
from etrmflow.errors import ConfigIssue, SecretMissing
from etrmflow.secrets import SecretStore
from etrmflow.templating import SECRET_MARKER, is_template

_SECRET_CALL = re.compile(r"""secret\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
"""A secret() call in a request-time template, which stays unrendered until the request."""


def _markers(value: Any, path: KeyPath = ()) -> list[tuple[KeyPath, str]]:
    if isinstance(value, str):
        names = SECRET_MARKER.findall(value) + (_SECRET_CALL.findall(value) if is_template(value) else [])
        return [(path, name) for name in names]
    if isinstance(value, Mapping):
        return [found for key, item in value.items() for found in _markers(item, path + (key,))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _markers(item, path + (index,))]
    return []


def check_secrets(pipelines: list[ResolvedPipeline], store: SecretStore) -> None:
    """Raise SecretMissing (exit 2) naming every unset secret at its file:line:col."""
    issues: list[ConfigIssue] = []
    seen: set[tuple[str, KeyPath, str]] = set()
    for resolved in pipelines:
        for loaded in (resolved.connector, resolved.pipeline, *resolved.sink_connectors.values()):
            issues.extend(missing_secrets(loaded, store, seen))
    if issues:
        raise SecretMissing(issues)


def missing_secrets(loaded: Loaded, store: SecretStore,
                    seen: set[tuple[str, KeyPath, str]] | None = None) -> list[ConfigIssue]:
    """Issues for every secret marker in a document that the store cannot resolve. The names
    found are declared to the store: it resolves no other (see ``SecretStore.declare``)."""
    seen = set() if seen is None else seen
    issues = []
    markers = _markers(loaded.data)
    store.declare(name for _, name in markers)
    for path, name in markers:
        if (loaded.document.display, path, name) in seen or not store.missing([name]):
            continue
        seen.add((loaded.document.display, path, name))
        issues.append(ConfigIssue(location=loaded.document.locate(path), key_path=format_key_path(path),
                                  message=f"secret '{name}' is not set",
                                  hint=f"export {name}=... in the environment that runs etrmflow"))
    return issues
