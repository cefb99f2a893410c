"""Built-in plugin (placeholder, filled in by the change that adds it)."""

from __future__ import annotations
