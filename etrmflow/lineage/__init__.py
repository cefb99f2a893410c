"""Lineage of one record key: every version a pipeline wrote, every dead letter of it, and the
vendor request each came from (joined to the audit log by page hash).

The logic behind ``etrmflow lineage``, without click, for use from Python too::

    from etrmflow.lineage import parse_key, trace

    key = parse_key(["ACME-T-0000001", "2"], pipeline.contract.primary_key)
    found = trace(plan, pipeline, key)
    print(found.as_dict())
"""

from etrmflow.lineage.key import BadKey, parse_key
from etrmflow.lineage.model import Fetch, Lineage, Quarantined, Written
from etrmflow.lineage.render import table
from etrmflow.lineage.trace import audit_fetches, trace

__all__ = ["BadKey", "Fetch", "Lineage", "Quarantined", "Written", "audit_fetches", "parse_key", "table",
           "trace"]
