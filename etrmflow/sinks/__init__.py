"""The built-in sinks: SQLite (default), Parquet and CSV.

Registered by the plugin module ``etrmflow.builtins.sinks``; shared helpers live in
``etrmflow.sinks.common``.
"""

from etrmflow.sinks.files import CsvSink, ParquetSink
from etrmflow.sinks.sqlite import SqliteSink

__all__ = ["CsvSink", "ParquetSink", "SqliteSink"]
