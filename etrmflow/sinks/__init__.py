"""The built-in sinks: SQLite (default), Parquet, CSV and PostgreSQL.

Registered by the plugin module ``etrmflow.builtins.sinks``; shared helpers live in
``etrmflow.sinks.common``.
"""

from etrmflow.sinks.files import CsvSink
from etrmflow.sinks.parquet import ParquetSink
from etrmflow.sinks.postgres import PostgresSink
from etrmflow.sinks.sqlite import SqliteSink

__all__ = ["CsvSink", "ParquetSink", "PostgresSink", "SqliteSink"]
