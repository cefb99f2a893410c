"""The transform chain of a pipeline: batch steps run on each page's frame as it arrives;
whole-dataset steps (``Transform.whole_dataset``) see every row of the run.

``StepChain.apply`` takes one validated batch and yields what is ready to write now;
``StepChain.finish`` yields the rest once the last page is in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import pandas as pd

from etrmflow.components import BatchInfo, Transform
from etrmflow.errors import TransformError


class StepChain:
    def __init__(self, steps: Sequence[Transform]) -> None:
        self.steps = list(steps)
        if any(step.whole_dataset for step in self.steps):
            raise TransformError("whole-dataset steps are not supported yet")

    def apply(self, frame: pd.DataFrame, batch: BatchInfo) -> Iterator[tuple[pd.DataFrame, BatchInfo]]:
        for index, step in enumerate(self.steps):
            try:
                frame = step.apply(frame)
            except Exception as exc:
                raise TransformError(f"transforms[{index}] ({step.type_name}) failed on batch "
                                     f"{batch.batch_id}: {type(exc).__name__}: {exc}") from exc
        yield frame, batch

    def finish(self) -> Iterator[tuple[pd.DataFrame, BatchInfo]]:
        return iter(())


def apply_steps(steps: Sequence[Transform], pages: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Run steps over frames as a pipeline would (one frame per page); the concatenated output.
    For tests, case files and notebooks."""
    chain = StepChain(steps)
    outputs: list[pd.DataFrame] = []
    for index, frame in enumerate(pages):
        batch = BatchInfo(run_id="apply_steps", batch_id=f"page-{index}", page_sha256="", pipeline="apply_steps")
        outputs.extend(out for out, _ in chain.apply(frame, batch))
    outputs.extend(out for out, _ in chain.finish())
    return pd.concat(outputs, ignore_index=True) if outputs else pd.DataFrame()
