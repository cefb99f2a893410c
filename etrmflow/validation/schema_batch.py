"""A batch's JSON Schema violations, exactly as ``jsonschema`` reports them, fast.

``jsonschema`` is the reference: the verdict of every record and each violation's pointer,
keyword and message must be the ones its ``iter_errors`` gives. Asking it costs ~130 µs a
trade record, so the batch is split:

1. jsonschema-rs checks the whole batch in one call, against ``rust_schema.RustSchema``: the
   structure, plain patterns (which it reads as Python does), ``date-time`` through an
   accelerator that accepts only valid values, and the root's ``required`` as key counts. It
   reports each failing (instance path, keyword location);
2. the other formats, other patterns and ``x-etrmflow-decimal`` are checked column-wise in
   Python at their paths (``value_checks``), with the tests jsonschema itself applies;
3. every failure found by 1 or 2 is a *suspect*: jsonschema's own keyword function is run on
   that one value with that one subschema, and what it yields is the violation (message and
   all). A suspect it does not confirm (an accelerator is stricter than its format, and
   jsonschema-rs is stricter than jsonschema about integers near 2**63) is dropped.

A record with no suspect is valid. That is exact when jsonschema-rs never accepts what
jsonschema rejects: true for the keywords in ``located.VERIFIED`` on JSON values (what a JSON
decoder produces), which tests/test_validation_equivalence.py checks differentially. A schema
with any other keyword, or a value keyword without a plain path, is handed to jsonschema whole,
record by record (at jsonschema's speed); so is a record jsonschema-rs cannot read (a lone
surrogate, say).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jsonschema
import jsonschema_rs

from etrmflow.validation.columns import Column, Columns, Concrete
from etrmflow.validation.decimals import KEYWORD as DECIMAL
from etrmflow.validation.decimals import (
    ReferenceValidator,
    check_declarations,
    parse_spec,
)
from etrmflow.validation.located import (
    Located,
    UnreachableFormat,
    locate,
    unverified_keywords,
)
from etrmflow.validation.rust_schema import RustSchema, plain_pattern
from etrmflow.validation.value_checks import DecimalCheck, FormatCheck, PatternCheck

Found = tuple[str, str, str]
"""(JSON pointer, keyword, message) of one violation."""
_RECORD = "urn:etrmflow:record"
_REGEX = jsonschema_rs.RegexOptions()
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONFIRMED_LIMIT = 10_000
# Keywords whose errors come from their subschemas: a suspect naming one is not a leaf.
_APPLICATORS = frozenset({"properties", "items", "allOf", "$ref", "$defs", "additionalProperties"})


def json_pointer(path: Iterable[Any]) -> str:
    """RFC 6901 pointer of a path of keys and indexes (``""`` for the whole record)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


class SchemaBatch:
    """``violations(records)``: the jsonschema errors of the records that have any, by index,
    as sorted (pointer, keyword, message) triples without repeats. ``fast`` is False when
    jsonschema judges every record (``unverified`` says why)."""

    def __init__(self, schema: Mapping[str, Any], format_checker: jsonschema.FormatChecker,
                 accelerators: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.schema = schema
        check_declarations(schema)  # a malformed x-etrmflow-decimal fails now, not mid-run
        self.reference = ReferenceValidator(schema, format_checker=format_checker)
        self.unverified = unverified_keywords(schema)
        try:
            located = locate(schema)
        except UnreachableFormat as exc:
            located, self.unverified = [], {*self.unverified, f"value keyword under {exc}"}
        self.fast = not self.unverified
        self._confirmed: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], str]]] = {}
        self._nodes: dict[tuple[Any, ...], Any] = {}
        self._pointers: dict[Concrete, str] = {}
        if self.fast:
            self._compile(located, format_checker, accelerators or {})

    def _compile(self, located: list[Located], format_checker: jsonschema.FormatChecker,
                 accelerators: Mapping[str, Mapping[str, Any]]) -> None:
        formats = {id(item.schema): item for item in located if item.keyword == "format"}
        rust = RustSchema(self.schema, accelerators, frozenset(formats))
        self._required_of, self._closed = rust.required_of, rust.closed
        self._accelerated = {where: formats[id(node)] for where, node in rust.accelerated.items()}
        in_rust = {id(node) for node in rust.accelerated.values()}
        self._checks = [(item, _check(item, format_checker)) for item in located
                        if not (item.keyword == "pattern" and plain_pattern(item.value))
                        and not (item.keyword == "format" and id(item.schema) in in_rust)]
        # Plain patterns and accelerators are regular: the linear-time engine reads them alike.
        self._one = jsonschema_rs.validator_for(rust.schema, validate_formats=False, pattern_options=_REGEX)
        self._batch = jsonschema_rs.validator_for(_batch_schema(rust.schema), validate_formats=False,
                                                  pattern_options=_REGEX)

    def violations(self, records: list[Any]) -> dict[int, list[Found]]:
        if not self.fast:
            found = {row: self.reference_violations(record) for row, record in enumerate(records)}
            return {row: errors for row, errors in found.items() if errors}
        suspects, unreadable = self._structure(records)
        rows = [i for i in range(len(records)) if i not in unreadable] if unreadable else list(range(len(records)))
        columns = Columns(records, rows)
        for item, check in self._checks:
            column = columns.at(item.path)
            for k in check(column):
                row, where = column.where(k)
                suspects[row].add((where, item))
        out = {row: self.reference_violations(records[row]) for row in unreadable}
        for row, found in suspects.items():
            if row not in unreadable:
                out[row] = self._confirm(records[row], found)
        return {row: errors for row, errors in out.items() if errors}

    def reference_violations(self, record: Any) -> list[Found]:
        """jsonschema's errors for one record: the reference, and the fallback."""
        return sorted({(json_pointer(e.absolute_path), str(e.validator), e.message)
                       for e in self.reference.iter_errors(record)})

    # -- 1: structure -------------------------------------------------------------------------

    def _structure(self, records: list[Any]) -> tuple[defaultdict[int, set[Any]], set[int]]:
        """Suspects by record (instance path, keyword location), and records rs cannot read."""
        suspects: defaultdict[int, set[Any]] = defaultdict(set)
        try:
            for error in self._batch.iter_errors(records):
                row, *where = error.instance_path
                location = tuple(error.schema_path)  # under "items" but for $defs: the record's
                location = location[1:] if location[0] == "items" else location
                suspects[row].update(self._suspects(tuple(where), location))
            return suspects, set()
        except Exception:  # noqa: BLE001 - rs could not read some record (a lone surrogate, say)
            suspects.clear()  # find which, record by record
        unreadable: set[int] = set()
        for row, record in enumerate(records):
            try:
                found = {suspect for e in self._one.iter_errors(record)
                         for suspect in self._suspects(tuple(e.instance_path), tuple(e.schema_path))}
            except Exception:  # noqa: BLE001 - judged by jsonschema instead
                unreadable.add(row)
                continue
            if found:
                suspects[row] = found
        return suspects, unreadable

    def _suspects(self, where: Concrete, location: tuple[Any, ...]) -> tuple[tuple[Concrete, Any], ...]:
        """A failure of an accelerator is a suspect for its format, of a key count one for its
        object's ``required`` (see ``RustSchema``), as is an unexpected key in such an object;
        any other is its keyword's."""
        required = self._required_of.get(location)
        if required is not None:
            return ((where, required),)
        if location[-1] == "additionalProperties" and location[:-1] in self._closed:
            return (where, location), (where, (*location[:-1], "required"))
        return ((where, self._accelerated.get(location[:-1], location)),)

    # -- 3: confirmation by jsonschema -------------------------------------------------------

    def _confirm(self, record: Any, suspects: set[tuple[Concrete, Any]]) -> list[Found]:
        found: set[Found] = set()
        for where, location in suspects:
            if isinstance(location, Located):
                node, keyword = location.schema, location.keyword
            else:
                node, keyword = self._node(location[:-1]), location[-1]
                if keyword in _APPLICATORS and not isinstance(node.get(keyword), bool):
                    return self.reference_violations(record)  # not a leaf: ask jsonschema
            for relative, message in self._judge(node, keyword, _at(record, where)):
                found.add((self._pointer((*where, *relative) if relative else where), keyword, message))
        return sorted(found)

    def _pointer(self, where: Concrete) -> str:
        pointer = self._pointers.get(where)
        if pointer is None:
            if len(self._pointers) >= _CONFIRMED_LIMIT:
                self._pointers.clear()
            pointer = self._pointers[where] = json_pointer(where)
        return pointer

    def _judge(self, node: Mapping[str, Any], keyword: str, instance: Any) -> list[tuple[tuple[Any, ...], str]]:
        """What jsonschema's keyword function says of ``instance``: (relative path, message)s.
        Remembered for scalars, which is what most defects are (a bad code, a naive time)."""
        key = _memo_key(node, keyword, instance)
        verdict = self._confirmed.get(key) if key is not None else None
        if verdict is None:
            function = self.reference.VALIDATORS[keyword]
            verdict = [(tuple(error.relative_path), error.message)
                       for error in function(self.reference, node[keyword], instance, node) or ()]
            if key is not None:
                if len(self._confirmed) >= _CONFIRMED_LIMIT:
                    self._confirmed.clear()
                self._confirmed[key] = verdict
        return verdict

    def _node(self, location: tuple[Any, ...]) -> Mapping[str, Any]:
        node = self._nodes.get(location)
        if node is None:
            node = self.schema
            for part in location:
                node = node[part]
            self._nodes[location] = node
        return node


def _memo_key(node: Mapping[str, Any], keyword: str, instance: Any) -> tuple[Any, ...] | None:
    """What jsonschema's verdict depends on, when that is cheap to say: a scalar (with its type:
    1, 1.0 and True differ; a zero with its repr: 0.0 and -0.0 print differently), or the keys
    an object lacks for ``required``."""
    kind = type(instance)
    if kind in _SCALARS:
        return id(node), keyword, kind, instance, repr(instance) if kind is float and not instance else None
    if keyword == "required" and kind is dict and isinstance(node.get("required"), list):
        return id(node), keyword, tuple(key for key in node["required"] if key not in instance)
    return None


def _batch_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of a list of records. Its ``$defs`` move up beside ``items``, where the
    record's ``#/$defs/...`` refs still find them (cheaper for jsonschema-rs than a ref to the
    record as a resource of its own, which other refs need)."""
    refs: list[str] = []
    _collect_refs(schema, refs)
    if all(ref.startswith("#/$defs/") for ref in refs):
        record = {k: v for k, v in schema.items() if k not in ("$defs", "$schema")}
        return {"items": record, "$defs": schema.get("$defs", {})}
    registry_schema = dict(schema, **{"$id": _RECORD})
    return {"items": {"$ref": _RECORD}, "$defs": {"record": registry_schema}}


def _collect_refs(node: Any, refs: list[str]) -> None:
    if isinstance(node, Mapping):
        if isinstance(node.get("$ref"), str):
            refs.append(node["$ref"])
        for value in node.values():
            _collect_refs(value, refs)
    elif isinstance(node, list):
        for value in node:
            _collect_refs(value, refs)


def _at(record: Any, where: Concrete) -> Any:
    for part in where:
        record = record[part]
    return record


def _check(item: Located, format_checker: jsonschema.FormatChecker) -> Callable[[Column], list[int]]:
    if item.keyword == "format":
        return FormatCheck(item.value, format_checker).failing
    if item.keyword == "pattern":
        return PatternCheck(item.value).failing
    assert item.keyword == DECIMAL
    return DecimalCheck(parse_spec(item.value)).failing


__all__ = ["Found", "SchemaBatch", "json_pointer"]
