"""Submission records: what the events of each submission add up to.

`open_store(url)` gives a store: `sqlite:///path.db` (the embedded default) or
`postgresql://...`. Both share one schema, created and migrated by the store itself.
"""

from __future__ import annotations

from bystroq.errors import BystroqError
from bystroq.records.batchstore import Batch, Store
from bystroq.records.model import (
    FINAL_STATES,
    STATES,
    IncomingEvent,
    Record,
    TimelineEntry,
    parse_event,
)

DEFAULT_URL = "sqlite:///bystroq.db"

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


def open_store(url: str = DEFAULT_URL, read_only: bool = False) -> Store:
    """The records store at `url` (schema created or migrated on open).

    A `read_only` store creates nothing: the database must exist and is never written."""
    if url.startswith("sqlite://"):
        from bystroq.records.sqlite import SQLiteStore

        path = url[len("sqlite://"):]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise BystroqError(f"{url}: expected sqlite:///relative.db or sqlite:////abs.db")
        return SQLiteStore(url, path, read_only)
    if url.startswith(("postgresql://", "postgres://")):
        from bystroq.records.postgres import PostgresStore

        return PostgresStore(url, read_only)
    raise BystroqError(
        f"records URL {url!r}: expected sqlite:///path.db or postgresql://user@host/db"
    )
