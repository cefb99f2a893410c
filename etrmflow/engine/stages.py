"""The transform chain of a pipeline: batch steps run on each page's frame as it arrives;
whole-dataset steps (``DatasetStep``, ``Transform.whole_dataset``) see every row of the run.

``StepChain.apply`` takes one validated batch and yields what is ready to write now;
``StepChain.finish`` yields the rest once the last page is in.

With whole-dataset steps the chain is cut into stages. The batch steps before the first
whole-dataset step run per page, and their output is staged (``etrmflow.engine.staging``)
instead of written. ``finish`` reads each stage back in the order of its step's group key,
chunk by chunk, hands the chunks to the step, runs the batch steps that follow on each output
frame, and stages that for the next whole-dataset step, or yields it to the sinks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from etrmflow.components import BatchInfo, ContractInfo, Transform
from etrmflow.engine.staging import StagingPlace, StagingStore
from etrmflow.engine.staging_read import concat_frames, read_chunks
from etrmflow.errors import EtrmflowError, TransformError
from etrmflow.steps.common import require_columns
from etrmflow.steps.dataset import DEFAULT_CHUNK_ROWS, DatasetStep

log = logging.getLogger("etrmflow.run")


@dataclass(frozen=True, slots=True)
class _Stage:
    """A whole-dataset step (at ``index`` in the pipeline's transforms) and the batch steps after it."""

    index: int
    step: DatasetStep
    after: list[tuple[int, Transform]]


def _where(index: int, step: Transform) -> str:
    return f"transforms[{index}] ({step.type_name})"


class StepChain:
    def __init__(self, steps: Sequence[Transform], *, staging: StagingPlace | None = None) -> None:
        self.steps = list(steps)
        self.head: list[tuple[int, Transform]] = []
        self.stages: list[_Stage] = []
        for index, step in enumerate(self.steps):
            if not step.whole_dataset:
                (self.stages[-1].after if self.stages else self.head).append((index, step))
            elif isinstance(step, DatasetStep):
                self.stages.append(_Stage(index, step, []))
            else:
                raise TransformError(f"{_where(index, step)} says whole_dataset but is no "
                                     f"etrmflow.steps.dataset.DatasetStep, so the engine cannot feed it")
        self.staging = staging
        self.store: StagingStore | None = None

    def open(self) -> None:
        """Open (a fresh run: create) the staging database, if whole-dataset steps need one."""
        if self.stages and self.staging is not None and self.store is None:
            self.store = StagingStore(self.staging)

    def apply(self, frame: pd.DataFrame, batch: BatchInfo) -> Iterator[tuple[pd.DataFrame, BatchInfo]]:
        frame = _run(self.head, frame, f"batch {batch.batch_id}")
        if not self.stages:
            yield frame, batch
            return
        self._stage(0, batch.batch_id, frame)

    def finish(self) -> Iterator[tuple[pd.DataFrame, BatchInfo]]:
        """After the last page: every whole-dataset step over the staged rows, in order."""
        if not self.stages:
            return
        store = self._store()
        store.drop_stages_from(1)  # what an interrupted finish staged: rebuilt from the pages' stage
        assert self.staging is not None
        for number, stage in enumerate(self.stages):
            last = number + 1 == len(self.stages)
            for frame, batch_id in self._outputs(store, number, stage):
                frame = _run(stage.after, frame, f"chunk {batch_id}")
                if not last:
                    self._stage(number + 1, batch_id, frame)
                elif len(frame):
                    yield frame, BatchInfo(run_id=self.staging.run_id, batch_id=batch_id, page_sha256="",
                                           pipeline=self.staging.pipeline)

    def counters(self) -> dict[str, dict[str, int]]:
        """The counters of the steps that have some (``counters()``), keyed ``transforms[<index>].<type>``."""
        found = {}
        for index, step in enumerate(self.steps):
            counts = getattr(step, "counters", dict)()
            if counts:
                found[f"transforms[{index}].{step.type_name}"] = dict(counts)
        return found

    def close(self) -> None:
        """Close the staging database; remove staging files no checkpoint refers to."""
        if self.store is not None:
            self.store.close()
        if self.staging is not None:  # also when the steps are gone: an older run's files go too
            try:
                self.staging.tidy()
            except OSError as exc:  # leftovers are tidied by the next run; never fail a run for them
                log.warning("could not remove staging files of %s: %s", self.staging.pipeline, exc)

    # -- stages ----------------------------------------------------------------------------

    def _store(self) -> StagingStore:
        if self.store is None:
            index, step = self.stages[0].index, self.stages[0].step
            raise TransformError(f"{_where(index, step)} is a whole-dataset step: it needs every row of a "
                                 f"run, staged as the run goes, so records cannot pass through it on their "
                                 f"own (a dead-letter replay); rerun the pipeline instead")
        return self.store

    def _stage(self, number: int, batch_id: str, frame: pd.DataFrame) -> None:
        stage = self.stages[number]
        key = stage.step.group_key()
        try:  # a key column the page lacks (an optional field) stages as empty; finish checks the run had it
            self._store().stage(number, batch_id, frame, key)
        except EtrmflowError:
            raise
        except Exception as exc:
            raise TransformError(f"{_where(stage.index, stage.step)} could not stage batch {batch_id}: "
                                 f"{type(exc).__name__}: {exc}") from exc

    def _outputs(self, store: StagingStore, number: int, stage: _Stage) -> Iterator[tuple[pd.DataFrame, str]]:
        """The step's output frames, each with a batch id derived from the input read so far."""
        assert self.staging is not None
        staged = store.columns(number)
        if staged:  # the key of every page was optional: a typo, most likely
            try:
                require_columns(pd.DataFrame(columns=staged), stage.step.group_key(), stage.step.type_name)
            except ValueError as exc:
                raise TransformError(f"{_where(stage.index, stage.step)}: no page had its group key: {exc}") from None
        read = hashlib.sha256(f"{self.staging.pipeline}:{number}:{stage.index}".encode())
        size = stage.step.chunk_rows() or DEFAULT_CHUNK_ROWS

        def frames() -> Iterator[pd.DataFrame]:
            for chunk in read_chunks(store, number, len(stage.step.group_key()), size):
                read.update(chunk.digest.encode())
                yield chunk.frame

        scratch = self.staging.scratch / f"step-{stage.index}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            outputs = stage.step.apply_chunks(frames(), scratch)
            for ordinal, frame in enumerate(_guarded(outputs, stage)):
                yield frame, hashlib.sha256(f"{read.hexdigest()}:{ordinal}".encode()).hexdigest()[:32]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _guarded(outputs: Iterator[pd.DataFrame], stage: _Stage) -> Iterator[pd.DataFrame]:
    """The step's frames; a failure names the step (engine errors pass through as they are)."""
    try:
        for frame in outputs:
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(f"apply_chunks yielded a {type(frame).__name__}, not a DataFrame")
            yield frame
    except EtrmflowError:
        raise
    except Exception as exc:
        raise TransformError(f"{_where(stage.index, stage.step)} failed on the staged rows: "
                             f"{type(exc).__name__}: {exc}") from exc


def _run(steps: list[tuple[int, Transform]], frame: pd.DataFrame, what: str) -> pd.DataFrame:
    for index, step in steps:
        try:
            frame = step.apply(frame)
        except Exception as exc:
            raise TransformError(f"{_where(index, step)} failed on {what}: {type(exc).__name__}: {exc}") from exc
    return frame


def apply_steps(steps: Sequence[Transform], pages: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Run steps over frames as a pipeline would (one frame per page); the concatenated output.
    Whole-dataset steps stage in a temporary folder. For tests, case files and notebooks."""
    with tempfile.TemporaryDirectory(prefix="etrmflow-steps-") as folder:
        place = StagingPlace(folder=Path(folder), pipeline="apply_steps", run_id="apply_steps")
        chain = StepChain(steps, staging=place)
        try:
            chain.open()
            outputs: list[pd.DataFrame] = []
            for index, frame in enumerate(pages):
                batch = BatchInfo(run_id="apply_steps", batch_id=f"page-{index}", page_sha256="",
                                  pipeline="apply_steps")
                outputs.extend(out for out, _ in chain.apply(frame, batch))
            outputs.extend(out for out, _ in chain.finish())
        finally:
            with contextlib.suppress(Exception):
                chain.close()
    return concat_frames(outputs) if outputs else pd.DataFrame()


def contract_for_sinks(contract: ContractInfo, steps: Sequence[Transform]) -> ContractInfo:
    """What the sinks are told their rows are: the contract's records as the steps leave them.

    A step that renames or removes columns says so with ``output_columns(properties, key)``
    (an optional method: the column declarations and primary key after the step), so a renamed
    money column keeps its exact type and a renamed key column stays the key. A step that changes
    the grain (one row per group: aggregate, vwap, reconcile) keeps only the contract's columns
    it writes (with their declared types and money scales), keyed by its group, so a table of
    hourly positions gets no empty trade columns and upserts on its groups."""
    properties: dict[str, Any] = dict(contract.schema.get("properties") or {})
    key = tuple(contract.primary_key)
    changed = False
    for step in steps:
        grain = step.output_grain() if isinstance(step, DatasetStep) else None
        follow = getattr(step, "output_columns", None)
        if grain is not None:
            properties = {name: properties[name] for name in grain.columns if name in properties}
            key, changed = grain.key, True
        elif callable(follow):
            properties, key = follow(dict(properties), key)
            key, changed = tuple(key), True
    if not changed:
        return contract
    schema = {name: value for name, value in contract.schema.items() if name not in ("properties", "required")}
    return dataclasses.replace(contract, schema={**schema, "properties": properties}, primary_key=key)
