"""Cancelling a batch: no new jobs; queued ones deleted; running ones stopped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bystroq.errors import BystroqError
from bystroq.ops.cancel import CancelResult, cancel_submission
from bystroq.records.model import ACTIVE_STATES
from bystroq.records.store import BatchStore


@dataclass(frozen=True)
class BatchCancelled:
    """What cancelling a batch's jobs did."""

    batch_id: str
    deleted: int  # queued jobs deleted (or claims never put): they never run
    requested: int  # running jobs whose workers were asked to stop them

    def __str__(self) -> str:
        return (f"{self.deleted} queued jobs deleted, {self.requested} running jobs asked "
                "to stop")


def cancel_batch(store: BatchStore, batch_id: str, reason: str = "batch cancelled",
                 ) -> BatchCancelled:
    """No new jobs; queued ones deleted; running ones stopped by their workers."""
    batch = store.get_batch(batch_id)
    if batch is None:
        raise BystroqError(f"no batch {batch_id!r} in {store.url}")
    if not store.finish_batch(batch_id, "cancelled", reason):
        raise BystroqError(f"{batch_id}: already {batch.state}; nothing to cancel")
    return cancel_active(store, batch_id, reason)


def cancel_active(store: BatchStore, batch_id: str, reason: str,
                  states: Sequence[str] = ACTIVE_STATES) -> BatchCancelled:
    """Cancel the batch's records in `states`: how many were deleted or asked to stop."""
    deleted = requested = 0
    for record in store.batch_records(batch_id, states):
        if record.queue_id is None:  # claimed, never put: nothing on a server to delete
            deleted += store.record_event(record.submission_id, "cancelled", reason)
            continue
        try:
            outcome = cancel_submission(store, record.submission_id, reason)
        except BystroqError:
            continue  # finished in the meantime, or its job is already gone
        if outcome.result is CancelResult.DELETED:
            deleted += 1
        else:
            requested += 1
    return BatchCancelled(batch_id, deleted, requested)
