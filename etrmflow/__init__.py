"""etrmflow: declarative vendor and market API ingestion for energy trading."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("etrmflow")
"""Marker for plugin hook implementations: ``@etrmflow.hookimpl``."""

__all__ = ["__version__", "hookimpl"]
