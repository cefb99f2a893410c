"""The plugin system: built-ins through the same hooks, entry points, clashes, blocking."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import etrmflow
from etrmflow.components import Kind, Sink
from etrmflow.docgen import generate
from etrmflow.plugins import BUILTIN_PLUGINS, PluginError, Registry, make_plugin_manager

EXPECTED_BUILTINS = {
    Kind.AUTH: {"none", "bearer", "api_key", "basic", "oauth2_client_credentials", "oauth2_password"},
    Kind.PAGINATOR: {"single", "page_number", "offset", "cursor", "next_link"},
    Kind.VALIDATOR: {"json_schema", "rules"},
    Kind.SINK: {"sqlite", "parquet", "csv"},
    Kind.DEAD_LETTER: {"jsonl"},
    Kind.TRANSPORT: {"http"},
}


def test_builtins_register_through_the_hooks() -> None:
    registry = Registry.default(load_entry_points=False)
    for kind, names in EXPECTED_BUILTINS.items():
        assert names <= set(registry.names(kind)), kind
    assert {e.origin for e in registry.entries()} == {"builtin"}
    assert {"lei", "eic", "iso4217", "date-time"} <= set(registry.format_checkers())


def test_every_component_has_a_docstring_with_an_example_and_a_valid_schema() -> None:
    from jsonschema import Draft202012Validator

    for entry in Registry.default(load_entry_points=False).entries():
        doc = entry.cls.__doc__ or ""
        assert entry.cls.summary(), entry.name
        assert "::" in doc, f"{entry.kind} {entry.name} has no YAML example (a '::' literal block)"
        Draft202012Validator.check_schema(entry.cls.options_schema)


class _ClashingSink(Sink):
    """Claims the built-in name."""

    type_name = "sqlite"


class _ClashPlugin:
    @etrmflow.hookimpl
    def etrmflow_sink_types(self) -> list[type]:
        return [_ClashingSink]


def test_two_plugins_claiming_one_name_is_an_error_naming_both() -> None:
    manager = make_plugin_manager(load_entry_points=False, extra_plugins=[_ClashPlugin()])
    with pytest.raises(PluginError) as caught:
        Registry(manager)
    message = str(caught.value)
    assert "sink type 'sqlite' is registered twice" in message
    assert "builtin" in message and "_ClashingSink" in message and "SqliteSink" in message


def test_a_hook_returning_a_non_component_is_an_error() -> None:
    class Broken:
        @etrmflow.hookimpl
        def etrmflow_sink_types(self) -> list[object]:
            return [object]

    with pytest.raises(PluginError, match="not a sink component class"):
        Registry(make_plugin_manager(load_entry_points=False, extra_plugins=[Broken()]))


def test_blocked_builtin_disappears() -> None:
    everything = Registry.default(load_entry_points=False)
    registry = Registry.default(load_entry_points=False, disabled=["etrmflow.builtins.transforms"])
    basic = {"rename", "select", "drop", "cast", "parse_timestamps", "to_local_time", "derive", "filter"}
    assert basic <= set(everything.names(Kind.TRANSFORM))
    assert set(registry.names(Kind.TRANSFORM)) == set(everything.names(Kind.TRANSFORM)) - basic
    assert "etrmflow.builtins.transforms" in BUILTIN_PLUGINS


def _install_entry_point_plugin(root: Path) -> None:
    """A real distribution on sys.path: a package plus its .dist-info with an entry point."""
    package = root / "acme_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        import etrmflow
        from etrmflow.components import Sink

        class NullSink(Sink):
            """Discards rows (for dry runs).

            Example::

                sinks: [{type: null}]
            """
            type_name = "null"

            def write(self, frame, batch):
                return len(frame)

        @etrmflow.hookimpl
        def etrmflow_sink_types():
            return [NullSink]
    '''))
    info = root / "acme_plugin-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[etrmflow]\nacme = acme_plugin\n")


def test_entry_point_plugin_is_listed_with_its_origin(tmp_path: Path) -> None:
    _install_entry_point_plugin(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, "-m", "etrmflow", "plugins"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.split()[:2] == ["sink", "null"])
    assert "acme-plugin 1.2.3 (entry point 'acme')" in line
    assert "Discards rows" in line
    blocked = subprocess.run([sys.executable, "-m", "etrmflow", "plugins"], capture_output=True, text=True,
                             env={**env, "ETRMFLOW_DISABLE_PLUGINS": "acme"}, timeout=60)
    assert blocked.returncode == 0
    assert not any(row.split()[:2] == ["sink", "null"] for row in blocked.stdout.splitlines())


def test_reference_docs_are_current() -> None:
    reference = Path(__file__).parents[1] / "docs" / "reference.md"
    assert reference.read_text(encoding="utf-8") == generate(Registry.default(load_entry_points=False)), (
        "docs/reference.md is stale: run `python -m etrmflow.docgen > docs/reference.md`")
