"""The audit trail: an append-only, hash-chained JSON Lines log of what each vendor sent and what
every run did with it (``target/audit/audit.jsonl``), and its verification.

Each entry holds ``seq``, ``ts``, ``run_id``, ``pipeline``, ``event``, the event's fields, ``prev``
(the previous entry's hash; 64 zeros for the first) and ``hash`` (SHA-256 of the canonical JSON of
the entry without ``hash``). Editing, deleting, inserting or reordering entries breaks the chain.
Raw response bodies may be kept too, content-addressed (``target/bodies``; see ``bodies``).
"""

from etrmflow.audit.bodies import BODIES, BodyStore
from etrmflow.audit.chain import (
           AUDIT_LOG,
           GENESIS,
           canonical,
           entry_hash,
           records_sha256,
)
from etrmflow.audit.log import AuditError, AuditLog, Event
from etrmflow.audit.verify import Expectation, Problem, Verdict, verify

__all__ = ["AUDIT_LOG", "BODIES", "GENESIS", "AuditError", "AuditLog", "BodyStore", "Event", "Expectation",
           "Problem", "Verdict", "canonical", "entry_hash", "records_sha256", "verify"]
