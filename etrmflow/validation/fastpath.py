"""The validation fast path at a glance (kept as the entry point of ``etrmflow.validation``).

Per-record ``jsonschema`` with format checks runs at ~10,000 trade records a second, the
rules' closures at ~40,000: far slower than fetching. The fast path validates a batch:

* ``schema_batch``: jsonschema-rs checks the structure of the whole batch in Rust (plain
  patterns and format *accelerators* included); ``format``, ``x-etrmflow-decimal`` and other
  patterns are checked column-wise in Python, memoised; each failure found is confirmed by
  jsonschema's own keyword function, which also writes the message;
* ``rules_batch``: each rule's ``when`` and ``check`` run as numpy over the batch's columns on
  the records whose field types make that exact, the reference closures on the rest.

The verdicts and violations are the reference's (plain jsonschema, per-record rule
evaluation): tests/test_validation_equivalence.py checks it on 100,000 sandbox trades plus
crafted mutations and, differentially, mechanism by mechanism on generated schemas, values,
patterns and records.
"""

from etrmflow.validation.located import EACH, Path, UnreachableFormat, format_paths
from etrmflow.validation.rules_batch import RulesBatch
from etrmflow.validation.schema_batch import SchemaBatch

__all__ = ["EACH", "Path", "RulesBatch", "SchemaBatch", "UnreachableFormat", "format_paths"]
