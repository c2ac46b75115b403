"""Batches: one category run over the records of a file, tracked together.

files (reading and checking the records), create, status (and waiting), cancel, and the
feeder that keeps each batch's jobs in flight up to its concurrency.
"""

from __future__ import annotations

from bystroq.ops.batches.cancel import cancel_batch
from bystroq.ops.batches.create import create_batch, parse_params
from bystroq.ops.batches.status import BatchStatus, batch_status, wait_for_batch

__all__ = [
    "BatchStatus",
    "batch_status",
    "cancel_batch",
    "create_batch",
    "parse_params",
    "wait_for_batch",
]
