"""What a records store offers, as Protocols, and `open_store` to get one.

Code that uses a store is typed against the narrowest Protocol it needs: the consumer writes
events (`EventWriter`), the commands that only read take a `RecordReader`, cancel and retry
a `RecordStore`, batches a `BatchStore`. The SQL stores (bystroq.records.sql) implement
them all; `open_store(url)` picks one by the URL's scheme: `sqlite:///path.db` (the
embedded default) or `postgresql://...`, both with one schema created and migrated by the
store itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from bystroq.control import Heartbeat
from bystroq.errors import BystroqError
from bystroq.records.batchstore import Batch, BatchState, Claim
from bystroq.records.batchstore import Store as Store  # what open_store returns
from bystroq.records.model import IncomingEvent, Record, TimelineEntry
from bystroq.records.workers import WorkerRow

DEFAULT_URL = "sqlite:///bystroq.db"


class Closable(Protocol):
    url: str

    def close(self) -> None: ...


class RecordReader(Closable, Protocol):
    """Queries: a submission, its timeline, lists and counts."""

    def get(self, submission_id: str) -> Record | None: ...

    def timeline(self, submission_id: str) -> list[TimelineEntry]: ...

    def list(self, category: str | None = None, state: str | None = None,
             batch: str | None = None, limit: int = 50) -> list[Record]: ...

    def count_by_state(self, batch: str | None = None) -> dict[str, int]: ...


class EventWriter(Closable, Protocol):
    """What the events consumer needs: apply events, keep the workers' heartbeats, and
    know when the store is away."""

    def apply_events(self, events: Sequence[IncomingEvent]) -> int: ...

    def save_beats(self, beats: Sequence[Heartbeat], now: float | None = None) -> None: ...

    def available_in(self) -> float: ...


class WorkerReader(Closable, Protocol):
    """The live-workers table (bystroq workers, GET /v1/workers)."""

    def workers(self, category: str | None = None) -> list[WorkerRow]: ...

    def worker(self, worker_id: str) -> WorkerRow | None: ...


class SubmitWriter(Protocol):
    """What a producer writes as it puts jobs (bystroq.producer.SubmitRecorder)."""

    def record_queued(self, submission_id: str, category: str, queue_id: int, server: str,
                      batch: str | None = None, at: float | None = None,
                      body: bytes | None = None) -> Record: ...

    def record_queued_many(self, category: str,
                           queued: Sequence[tuple[str, int, str, bytes | None]],
                           batch: str | None = None, at: float | None = None) -> int: ...

    def record_submit_failed(self, submission_id: str, category: str, reason: str,
                             ) -> Record: ...

    def record_submit_unknown(self, submission_id: str, category: str, server: str,
                              reason: str, sent_at: float, batch: str | None = None,
                              body: bytes | None = None) -> Record: ...


class RecordStore(RecordReader, EventWriter, SubmitWriter, Protocol):
    """Reading and writing records: what cancel and retry need."""

    def resubmitting(self, submission_id: str) -> Record: ...

    def record_event(self, submission_id: str, event: str, reason: str) -> bool: ...


class BatchStore(RecordStore, Protocol):
    """Records and batches: their items, the claims of puts in progress, their end."""

    def create_batch(self, batch: Batch, items: Iterable[tuple[int, str, bytes]]) -> None: ...

    def get_batch(self, batch_id: str) -> Batch | None: ...

    def list_batches(self, limit: int = 50) -> list[Batch]: ...

    def running_batches(self) -> list[Batch]: ...

    def claim_batch_items(self, batch_id: str, count: int) -> list[Claim]: ...

    def confirm_put(self, claim: Claim, queue_id: int, server: str) -> bool: ...

    def take_over(self, claim: Claim) -> Claim | None: ...

    def release_claims(self, claims: Sequence[Claim]) -> None: ...

    def stale_claims(self, before: float) -> list[Claim]: ...

    def batch_in_flight(self, batch_id: str) -> int: ...

    def batch_records(self, batch_id: str, states: Sequence[str], limit: int = 1_000_000,
                      ) -> list[Record]: ...

    def finish_batch(self, batch_id: str, state: BatchState, reason: str | None) -> bool: ...


def open_store(url: str = DEFAULT_URL, read_only: bool = False) -> Store:
    """The records store at `url` (schema created or migrated on open).

    A `read_only` store creates nothing: the database must exist and is never written."""
    if url.startswith("sqlite://"):
        from bystroq.records.sqlite import sqlite_store

        path = url[len("sqlite://"):]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise BystroqError(f"{url}: expected sqlite:///relative.db or sqlite:////abs.db")
        return sqlite_store(url, path, read_only)
    if url.startswith(("postgresql://", "postgres://")):
        from bystroq.records.postgres import postgres_store

        return postgres_store(url, read_only)
    raise BystroqError(
        f"records URL {url!r}: expected sqlite:///path.db or postgresql://user@host/db"
    )
