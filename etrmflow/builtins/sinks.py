"""Built-in plugin: the SQLite, Parquet, CSV and PostgreSQL sinks."""

from __future__ import annotations

from etrmflow import hookimpl
from etrmflow.sinks import CsvSink, ParquetSink, PostgresSink, SqliteSink


@hookimpl
def etrmflow_sink_types() -> list[type]:
    return [SqliteSink, ParquetSink, CsvSink, PostgresSink]
