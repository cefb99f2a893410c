"""What happens to one page after it is fetched. Runs in the pipeline's worker thread.

validate -> quarantine the invalid (dead-letter sink) -> transform the valid -> write to sinks.
Every record ends in exactly one of two places; ``PageOutcome`` proves it per page.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pandas as pd

from etrmflow import jsontext
from etrmflow.clock import utc_timestamp
from etrmflow.components import (
    BatchInfo,
    DeadLetter,
    DeadLetterSink,
    Page,
    Sink,
    SinkContext,
    Transform,
    Validator,
    Violation,
)
from etrmflow.engine.drift import DriftCounter
from etrmflow.engine.stages import StepChain, contract_for_sinks
from etrmflow.engine.staging import StagingPlace
from etrmflow.engine.unicode_check import printable_names, refuse_lone_surrogates
from etrmflow.engine.validation import validate_records
from etrmflow.errors import RunFailed, SinkError
from etrmflow.jsontext import JsonNumber
from etrmflow.plan import PipelinePlan
from etrmflow.secrets import REDACTOR, redact
from etrmflow.validation.decimal_fields import DecimalFields
from etrmflow.validation.decimals import decimal_columns

log = logging.getLogger("etrmflow.run")


@dataclass(frozen=True, slots=True, kw_only=True)
class PageOutcome:
    fetched: int
    valid: int
    quarantined: int
    dead_letters_new: int
    written: dict[str, int]
    drift: dict[str, int] = field(default_factory=dict)
    """Fields the contract schema does not declare: ``{field: records of the page that have it}``."""


SECRET_VIOLATION = Violation(
    pointer="", keyword="x-etrmflow-secret", validator="etrmflow",
    message="the record holds the value of a secret this run resolved (masked as *** in this dead letter); "
            "a vendor echoing a credential (often in a link that carries the key as a query parameter) "
            "should not: send the credential in a header (auth.in: header) or ask the vendor to drop it")


def record_sha256(record: Any) -> str:
    return hashlib.sha256(jsontext.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()


def batch_id(plan: PipelinePlan, vars: Mapping[str, Any], page: Page) -> str:
    """Deterministic: the same pipeline, variables, source and page content give the same id."""
    identity = {"pipeline": plan.name, "vars": vars, "path": plan.stream.path, "params": plan.stream.params,
                "partition": page.partition, "page": page.index, "page_sha256": page.sha256}
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:32]


_EXACT_IN_FLOAT = 2**53
"""Integers a double holds exactly: up to 2**53 in magnitude."""


def integer_fields(schema: Mapping[str, Any]) -> frozenset[str]:
    """Top-level properties typed ``integer`` (not also ``number``)."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return frozenset()
    kinds = {name: spec.get("type") for name, spec in properties.items() if isinstance(spec, Mapping)}
    return frozenset(name for name, kind in kinds.items()
                     if "integer" in (kind if isinstance(kind, list) else [kind])
                     and "number" not in (kind if isinstance(kind, list) else [kind]))


def double_key_fields(primary_key: Sequence[str], schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Key fields stored as doubles: typed ``number`` and not declared exact money."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return ()
    money = decimal_columns(schema)
    kinds = {name: properties[name].get("type") for name in primary_key if isinstance(properties.get(name), Mapping)}
    return tuple(name for name, kind in kinds.items()
                 if name not in money and "number" in (kind if isinstance(kind, list) else [kind]))


def _refuse_inexact_keys(records: list[Any], verdicts: list[list[Violation]], keys: tuple[str, ...]) -> None:
    """A key a double cannot hold (``JsonNumber``) would share its row with every other key of
    the same double: such a record is quarantined rather than merged into another."""
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            continue
        for key in keys:
            if type(record.get(key)) is JsonNumber:
                verdicts[row].append(Violation(
                    pointer=f"/{key}", keyword="x-etrmflow-key", validator="etrmflow",
                    message=f"key field {key} is {record[key]!r}, more digits than the double it is stored as "
                            f"keeps, so two such keys could become one row; declare it an integer, a string or "
                            f"exact money (x-etrmflow-decimal)"))


def _whole(value: Any) -> Any:
    """A whole number in an integer field as the int it is: ``12345678901234567.0`` (a
    JsonNumber, whose double is ...568) and ``2.0`` alike."""
    if isinstance(value, float) and value.is_integer():
        return int(Decimal(value.text)) if type(value) is JsonNumber else int(value)
    return value


def _exact_integers(frame: pd.DataFrame, records: list[Any], integers: frozenset[str] = frozenset()) -> pd.DataFrame:
    """``from_records`` makes a column of integers with gaps (an optional id), or mixed with
    floats (``2.0`` is an integer too), a float64 column, which would round an integer beyond
    2**53 (9007199254740993 to ...992). Such a column is rebuilt from the records: nullable
    Int64, or Python ints where int64 cannot hold them either, or as objects where floats
    remain (a sink then refuses what it cannot store, rather than round it). A whole
    ``JsonNumber`` in an ``integer`` field becomes the int of its text."""
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            if name in integers and any(type(v) is JsonNumber for v in column.tolist()):
                frame[name] = pd.Series([_whole(v) for v in column.tolist()], dtype=object, index=frame.index)
            continue
        # A double at or beyond 2**53 may be a rounded integer; a gap may hide one among NaNs.
        if column.dtype != "float64" or not (column.isna().any() or (column.abs() >= _EXACT_IN_FLOAT).any()):
            continue
        values = [record.get(name) if isinstance(record, dict) else None for record in records]
        if name in integers:
            values = [_whole(value) for value in values]
        present = [value for value in values if value is not None]
        if not any(type(value) is int and abs(value) > _EXACT_IN_FLOAT for value in present):
            continue  # float64 holds every value as sent
        if all(type(value) is int and -2**63 <= value < 2**63 for value in present):
            frame[name] = pd.array(values, dtype="Int64")
        else:
            frame[name] = pd.Series(values, dtype=object, index=frame.index)
    return frame


class PageProcessor:
    """Owns the validators, transforms and sinks of one pipeline run."""

    def __init__(self, *, plan: PipelinePlan, run_id: str, vars: Mapping[str, Any],
                 validators: Sequence[Validator], transforms: Sequence[Transform],
                 sinks: Sequence[Sink], dead_letter: DeadLetterSink, context: SinkContext,
                 staging: StagingPlace | None = None) -> None:
        """``context`` is the dead-letter sink's (the records as fetched); the sinks get it with
        the contract as the steps leave the rows (``stages.contract_for_sinks``)."""
        self.plan = plan
        self.run_id = run_id
        self.vars = vars
        self.validators = validators
        self.transforms = transforms
        # Without a staging place (a dead-letter replay), whole-dataset steps refuse to run.
        self.chain = StepChain(transforms, staging=staging)
        self.sinks = sinks
        self.dead_letter = dead_letter
        self.context = context
        self.sink_context = dataclasses.replace(context, contract=contract_for_sinks(context.contract, transforms))
        self.columns = list((plan.contract.schema.get("properties") or {}).keys())
        self.drift = DriftCounter(plan.contract.schema)
        self.decimals = DecimalFields(plan.contract.schema)
        self.integers = integer_fields(plan.contract.schema)
        self.double_keys = double_key_fields(plan.contract.primary_key, plan.contract.schema)
        self.quarantined: tuple[int, str, int, int] | None = None
        """``(page index, batch id, letters, new letters)`` of the last page whose invalid records
        were stored: evidence for the audit even when a later stage of that page fails."""
        self.timings: dict[str, float] = {}
        """Seconds per stage, summed over the pages processed so far."""

    def open(self) -> None:
        self.chain.open()
        self.dead_letter.open(self.context)
        for sink in self.sinks:
            sink.open(self.sink_context)

    def close(self, ok: bool) -> None:
        errors = []
        for component in (*self.sinks, self.dead_letter):
            try:
                component.close(ok)
            except Exception as exc:  # noqa: BLE001 - close every sink even if one fails
                errors.append(f"{component.describe()}: {exc}")
        if errors:
            raise SinkError("closing sinks failed: " + "; ".join(errors))

    def process(self, page: Page, batch: str | None = None) -> PageOutcome:
        """``batch``: the page's batch id, when not the one its content gives (see ``Committer``)."""
        began = time.perf_counter()
        verdicts = self.validate(page.records)
        holding_secrets = self._holding_secrets(page, verdicts)  # last: it masks every message
        self._lap("validate", began)
        batch = BatchInfo(run_id=self.run_id, batch_id=batch or batch_id(self.plan, self.vars, page),
                          page_sha256=page.sha256, pipeline=self.plan.name)
        records = page.records
        invalid = [row for row, found in enumerate(verdicts) if found]  # a few, usually
        valid = [record for record, found in zip(records, verdicts) if not found] if invalid else list(records)
        quarantined_at = utc_timestamp()
        letters = [self._letter(page, batch, REDACTOR.masked(records[row]) if row in holding_secrets else records[row],
                                verdicts[row], quarantined_at) for row in invalid]
        began = time.perf_counter()
        new_letters = self.dead_letter.write(letters) if letters else 0
        self._lap("quarantine", began)
        self.quarantined = (page.index, batch.batch_id, len(letters), new_letters)
        if letters and self.plan.on_invalid.action == "fail":
            first = letters[0]
            reasons = "; ".join(f"{v.pointer or '/'} {v.keyword}: {v.message}" for v in first.violations[:3])
            raise RunFailed(f"page {page.index} has {len(letters)} invalid record(s) and on_invalid.action "
                            f"is fail; first: {reasons} (quarantined in {self.dead_letter.describe()})")
        written = self.write(valid, batch) if valid else {sink.describe(): 0 for sink in self.sinks}
        return PageOutcome(fetched=len(page.records), valid=len(valid), quarantined=len(letters),
                           dead_letters_new=new_letters, written=written,
                           drift=printable_names(self.drift.count(page.records)))

    def _holding_secrets(self, page: Page, verdicts: list[list[Violation]]) -> set[int]:
        """Records that hold a secret value: quarantined whatever else they are, their letters
        masked (a vendor echoing the API key in a ``self`` link must not put it in a table)."""
        if page.holds_secret is False or not REDACTOR.found_in(jsontext.dumps(page.records)):
            return set()
        found = {row for row, record in enumerate(page.records) if REDACTOR.found_in(jsontext.dumps(record))}
        for row in found:
            masked = [dataclasses.replace(v, message=redact(v.message)) for v in verdicts[row]]
            verdicts[row] = [*masked, SECRET_VIOLATION]
        return found

    def validate(self, records: list[Any]) -> list[list[Violation]]:
        verdicts = validate_records(self.validators, records)
        if self.double_keys:
            _refuse_inexact_keys(records, verdicts, self.double_keys)
        refuse_lone_surrogates(records, verdicts)  # a type test a record, unless jsontext marked some
        return verdicts

    def write(self, records: list[Any], batch: BatchInfo) -> dict[str, int]:
        # Declared money becomes Decimal here, after validation and before any transform.
        began = time.perf_counter()
        records = self.decimals.convert(records)
        frame = _exact_integers(pd.DataFrame.from_records(records), records, self.integers)
        ordered = [c for c in self.columns if c in frame.columns] + [c for c in frame.columns if c not in self.columns]
        frame = frame[ordered]
        ready = list(self.chain.apply(frame, batch))
        began = self._lap("transform", began)
        return self._write_ready(ready, began)

    def finish(self, on_batch: Callable[[BatchInfo, dict[str, int]], None] | None = None) -> dict[str, int]:
        """After the last page: write what whole-dataset steps held back until now, one chunk
        at a time (never the whole output in memory). ``on_batch`` hears of each batch written."""
        written = {sink.describe(): 0 for sink in self.sinks}
        began = time.perf_counter()
        for frame, batch in self.chain.finish():
            began = self._lap("transform", began)
            rows = {sink.describe(): sink.write(frame, batch) for sink in self.sinks}
            for sink, count in rows.items():
                written[sink] += count
            if on_batch is not None:
                on_batch(batch, rows)
            began = self._lap("write", began)
        self._lap("transform", began)
        return written

    def _write_ready(self, ready: list[tuple[pd.DataFrame, BatchInfo]], began: float) -> dict[str, int]:
        written = {sink.describe(): 0 for sink in self.sinks}
        for frame, batch in ready:
            for sink in self.sinks:
                written[sink.describe()] += sink.write(frame, batch)
        self._lap("write", began)
        return written

    def _lap(self, stage: str, began: float) -> float:
        """Add the seconds since ``began`` to the stage; the end is the next stage's start."""
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - began
        return now

    def _letter(self, page: Page, batch: BatchInfo, record: Any, found: list[Violation],
                quarantined_at: str) -> DeadLetter:
        contract = self.plan.contract
        return DeadLetter(
            record=record, violations=tuple(found), contract=contract.name, contract_version=contract.version,
            connector=page.connector, stream=page.stream, page=page.index, request_url=page.url,
            run_id=self.run_id, batch_id=batch.batch_id, page_sha256=page.sha256,
            record_sha256=record_sha256(record), quarantined_at=quarantined_at)
