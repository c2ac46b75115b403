"""How far a batch got, and waiting for it to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bystroq.errors import BystroqError
from bystroq.records.batchstore import Batch
from bystroq.records.model import FINAL_STATES, Record
from bystroq.records.store import BatchStore

FAILURES_SHOWN = 5


class Stepping(Protocol):
    """What applies events and feeds batches while a wait goes on (ops.consume)."""

    def step(self) -> int: ...

    def feed(self, force: bool = False) -> int: ...


@dataclass(frozen=True)
class BatchStatus:
    """How far a batch got."""

    batch: Batch
    counts: dict[str, int]  # records by state, plus "pending" (not yet put)
    done: int  # finished: completed, failed or cancelled
    percent: float
    rate_per_s: float | None
    eta_s: float | None
    failures: list[Record]

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def batch_status(store: BatchStore, batch_id: str) -> BatchStatus:
    batch = store.get_batch(batch_id)
    if batch is None:
        raise BystroqError(f"no batch {batch_id!r} in {store.url}")
    counts = store.count_by_state(batch_id)
    never_put = batch.total - batch.fed
    if batch.state == "cancelled":  # never put, and never will be: cancelled too
        counts["cancelled"] = counts.get("cancelled", 0) + never_put
        never_put = 0
    counts["pending"] = never_put
    done = sum(counts.get(s, 0) for s in FINAL_STATES)
    ran = counts.get("completed", 0) + counts.get("failed", 0)
    end = batch.finished_at or time.time()
    elapsed = max(end - batch.created_at, 1e-6)
    rate = ran / elapsed if ran else None  # jobs that ran, not those cancelled unrun
    eta = (batch.total - done) / rate if rate and batch.state == "running" else None
    failures = store.batch_records(batch_id, ["failed"], limit=FAILURES_SHOWN)
    return BatchStatus(batch, counts, done, 100.0 * done / batch.total, rate, eta, failures)


WAIT_POLL_S = 0.2


def wait_for_batch(
    store: BatchStore, batch_id: str, consumer: Stepping | None,
    show: Callable[[BatchStatus], None] | None = None, timeout_s: float | None = None,
) -> BatchStatus:
    """Until the batch ends (or `timeout_s` passes: the status then says it is still
    running): with a consumer, apply its events and feed it meanwhile."""
    shown_at = 0.0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        busy = False
        if consumer is not None:
            busy = bool(consumer.step()) | bool(consumer.feed(force=True))
        status = batch_status(store, batch_id)
        now = time.monotonic()
        ended = status.batch.state != "running"
        if show is not None and (ended or now - shown_at >= WAIT_POLL_S):
            show(status)
            shown_at = now
        if ended or (deadline is not None and now >= deadline):
            return status
        if not busy:
            time.sleep(WAIT_POLL_S)
