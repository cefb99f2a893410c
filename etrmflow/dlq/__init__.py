"""Dead letters after the fact: list them, show one, replay them against the current contract.

The logic behind ``etrmflow dlq``, without click, for use from Python too::

    from etrmflow.dlq import open_store, replay

    store = open_store(plan, pipeline)                 # the pipeline's dead-letter store
    open_letters = [l for l in store.letters() if l.status is LetterStatus.OPEN]
    result = replay(plan, pipeline, registry, run_id="fix-lei-check", dry_run=True)
    print(result.as_dict()["counts"])

Each dead-letter type has a store (:class:`DeadLetterStore`); see ``stores.STORES``.
"""

from etrmflow.dlq.listing import find, key_values, row, select, table
from etrmflow.dlq.model import DeadLetterStore, LetterStatus, Resolution, StoredLetter
from etrmflow.dlq.replay import replay, replay_batch_id
from etrmflow.dlq.results import RecordOutcome, ReplayResult, summary
from etrmflow.dlq.stores import STORES, open_store

__all__ = [
    "STORES",
    "DeadLetterStore",
    "LetterStatus",
    "RecordOutcome",
    "ReplayResult",
    "Resolution",
    "StoredLetter",
    "find",
    "key_values",
    "open_store",
    "replay",
    "replay_batch_id",
    "row",
    "select",
    "summary",
    "table",
]
