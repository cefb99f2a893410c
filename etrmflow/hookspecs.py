"""Every hook etrmflow calls: the plugin author's manual.

A plugin is a module or object with functions marked ``@etrmflow.hookimpl`` whose names match
the specs below. Register one in your package's ``pyproject.toml``::

    [project.entry-points.etrmflow]
    my_sinks = "my_package.sinks"

The built-in components are registered through these same hooks (see
``etrmflow.plugins.BUILTIN_PLUGINS``), so a plugin can do anything a built-in does.

Registration hooks return a list of component classes (subclasses of the base classes in
``etrmflow.components``). Each class names its ``type_name`` (the ``type:`` used in YAML) and
its ``options_schema``. Two plugins claiming the same ``type_name`` for the same kind is an
error that names both plugins; block one with ``ETRMFLOW_DISABLE_PLUGINS=name``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("etrmflow")


@hookspec
def etrmflow_auth_types() -> list[type]:
    """Return auth classes (subclasses of ``etrmflow.components.Auth``).

    Selected in a connector by ``auth: {type: NAME, ...}``.
    """


@hookspec
def etrmflow_paginator_types() -> list[type]:
    """Return paginator classes (subclasses of ``etrmflow.components.Paginator``).

    Selected in a stream by ``paginator: {type: NAME, ...}``.
    """


@hookspec
def etrmflow_validator_types() -> list[type]:
    """Return validator classes (subclasses of ``etrmflow.components.Validator``).

    Selected in a contract by ``validators: [{type: NAME, ...}]``; ``json_schema`` and ``rules``
    are applied to every contract that declares a ``schema`` or ``rules``.
    """


@hookspec
def etrmflow_transform_types() -> list[type]:
    """Return transform step classes (subclasses of ``etrmflow.components.Transform``).

    Selected in a pipeline by ``transforms: [{type: NAME, ...}]``.
    """


@hookspec
def etrmflow_sink_types() -> list[type]:
    """Return sink classes (subclasses of ``etrmflow.components.Sink``).

    Selected in a pipeline by ``sinks: [{type: NAME, ...}]``.
    """


@hookspec
def etrmflow_dead_letter_types() -> list[type]:
    """Return dead-letter sink classes (subclasses of ``etrmflow.components.DeadLetterSink``).

    Selected in a pipeline by ``dead_letter: {type: NAME, ...}``.
    """


@hookspec
def etrmflow_transport_types() -> list[type]:
    """Return transport classes (subclasses of ``etrmflow.components.Transport``).

    Selected by a connector's top-level ``type:`` (``http`` is built in).
    """


@hookspec
def etrmflow_format_checkers() -> dict[str, Callable[[Any], bool]]:
    """Return JSON Schema format checkers, ``{format_name: function(value) -> bool}``.

    The function returns False (or raises ValueError) for a value that breaks the format; it
    is only called for strings. Used by every contract (``format: lei`` etc.).
    """
