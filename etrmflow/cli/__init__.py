"""The ``etrmflow`` command."""

from etrmflow.cli.main import cli, main

__all__ = ["cli", "main"]
