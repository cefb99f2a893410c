"""The plugin manager factory and the registry of component classes it yields.

Built a fresh one per use (never an import-time global), so that tests and concurrent
projects cannot leak plugins into each other.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from etrmflow import hookspecs
from etrmflow.components import Component, Kind

ENTRY_POINT_GROUP = "etrmflow"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "etrmflow.builtins.auth",
    "etrmflow.builtins.paginators",
    "etrmflow.builtins.validators",
    "etrmflow.builtins.reference_validators",
    "etrmflow.builtins.transforms",
    "etrmflow.builtins.steps",
    "etrmflow.builtins.dataset_steps",
    "etrmflow.builtins.sinks",
    "etrmflow.builtins.writeback",
    "etrmflow.builtins.dead_letters",
    "etrmflow.builtins.transports",
    "etrmflow.builtins.formats",
)

_HOOK_OF_KIND: dict[Kind, str] = {
    Kind.AUTH: "etrmflow_auth_types",
    Kind.PAGINATOR: "etrmflow_paginator_types",
    Kind.VALIDATOR: "etrmflow_validator_types",
    Kind.TRANSFORM: "etrmflow_transform_types",
    Kind.SINK: "etrmflow_sink_types",
    Kind.DEAD_LETTER: "etrmflow_dead_letter_types",
    Kind.TRANSPORT: "etrmflow_transport_types",
}


class PluginError(Exception):
    """A plugin is broken: two claim one name, or one returned something that is no component."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredComponent:
    kind: Kind
    name: str
    cls: type[Component]
    origin: str


def make_plugin_manager(*, load_entry_points: bool = True,
                        disabled: Iterable[str] | None = None,
                        extra_plugins: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A new plugin manager holding the built-ins, then installed plugins (entry points).

    ``disabled`` (default: ``ETRMFLOW_DISABLE_PLUGINS``, comma separated) blocks plugins by
    their registered name, built-ins included.
    """
    manager = pluggy.PluginManager("etrmflow")
    manager.add_hookspecs(hookspecs)
    if disabled is None:
        disabled = [name.strip() for name in os.environ.get("ETRMFLOW_DISABLE_PLUGINS", "").split(",")]
    for name in disabled:
        if name:
            manager.set_blocked(name)
    for module_name in BUILTIN_PLUGINS:
        if not manager.is_blocked(module_name):
            manager.register(importlib.import_module(module_name), name=module_name)
    if load_entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        manager.register(plugin)
    return manager


class Registry:
    """Component classes by kind and ``type`` name, each with the plugin it came from."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self._components: dict[Kind, dict[str, RegisteredComponent]] = {kind: {} for kind in Kind}
        self._formats: dict[str, Callable[[Any], bool]] = {}
        self._collect()

    @classmethod
    def default(cls, **kwargs: Any) -> Registry:
        return cls(make_plugin_manager(**kwargs))

    def get(self, kind: Kind, name: str) -> type[Component] | None:
        entry = self._components[kind].get(name)
        return entry.cls if entry else None

    def names(self, kind: Kind) -> list[str]:
        return sorted(self._components[kind])

    def entries(self) -> list[RegisteredComponent]:
        return [entry for kind in Kind for _, entry in sorted(self._components[kind].items())]

    def format_checkers(self) -> dict[str, Callable[[Any], bool]]:
        return dict(self._formats)

    def _origin(self, plugin_name: str) -> str:
        if plugin_name in BUILTIN_PLUGINS:
            return "builtin"
        plugin = self.manager.get_plugin(plugin_name)
        for registered, dist in self.manager.list_plugin_distinfo():
            if registered is plugin:
                return f"{dist.project_name} {dist.version} (entry point '{plugin_name}')"
        return plugin_name

    def _collect(self) -> None:
        for kind, hook_name in _HOOK_OF_KIND.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                for cls in impl.function() or []:
                    self._add(kind, cls, impl.plugin_name)
        for impl in self.manager.hook.etrmflow_format_checkers.get_hookimpls():
            for name, checker in (impl.function() or {}).items():
                self._formats[name] = checker

    def _add(self, kind: Kind, cls: Any, plugin_name: str) -> None:
        origin = self._origin(plugin_name)
        if not (isinstance(cls, type) and issubclass(cls, Component) and getattr(cls, "kind", None) == kind):
            raise PluginError(f"plugin {origin} returned {cls!r} from the {kind} hook, "
                              f"which is not a {kind} component class")
        name = cls.type_name
        if name in self._components[kind]:
            other = self._components[kind][name]
            raise PluginError(f"{kind} type '{name}' is registered twice: by {other.origin} "
                              f"({other.cls.__module__}.{other.cls.__name__}) and by {origin} "
                              f"({cls.__module__}.{cls.__name__}); block one with "
                              f"ETRMFLOW_DISABLE_PLUGINS")
        self._components[kind][name] = RegisteredComponent(kind=kind, name=name, cls=cls, origin=origin)
