"""Submission records: what the events of each submission add up to.

model (the internal Record and the rules that apply events, no I/O), views (the public
schema), store (the Protocols and `open_store`), and the SQL stores: `sqlite:///path.db`
(the embedded default) or `postgresql://...`, one schema created and migrated by the store.
"""

from __future__ import annotations

from bystroq.records.batchstore import Batch, Store
from bystroq.records.model import (
    FINAL_STATES,
    STATES,
    IncomingEvent,
    Record,
    TimelineEntry,
    parse_event,
)
from bystroq.records.store import DEFAULT_URL, open_store

__all__ = [
    "DEFAULT_URL",
    "FINAL_STATES",
    "STATES",
    "Batch",
    "IncomingEvent",
    "Record",
    "Store",
    "TimelineEntry",
    "open_store",
    "parse_event",
]

