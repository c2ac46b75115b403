"""Batches: one category run over the records of a JSON-lines or CSV file, tracked together.

`create_batch` reads and checks every record before anything is written (see
bystroq.batchfiles), spooling the jobs to a temporary file rather than holding them, stores
the batch and its jobs in one transaction, and puts the first `concurrency` jobs; the feeder
(in every
`bystroq consume`) puts the next one each time one finishes. See bystroq.feeder.
"""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from bystroq.batchfiles import BatchError, RecordsFile
from bystroq.cancel import CancelResult, cancel_submission
from bystroq.config import LoadedConfig
from bystroq.errors import BystroqError
from bystroq.producer import DEFAULT_PRIORITY, Producer
from bystroq.records import Batch, Record, Store
from bystroq.records.batchstore import DuplicateItem, ErrorPolicy
from bystroq.records.model import ACTIVE_STATES
from bystroq.worker.listener import load_listener

if TYPE_CHECKING:
    from bystroq.consumer import Consumer

FAILURES_SHOWN = 5
_ENCODE = msgspec.json.Encoder().encode
_DECODE_ID = msgspec.json.Decoder(str).decode


def new_batch_id() -> str:
    return f"batch-{secrets.token_hex(4)}"


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; a value that is JSON (a number, true, a list) is taken as such."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BatchError(f"--param {pair!r}: expected key=value")
        try:
            params[key] = msgspec.json.decode(value)
        except msgspec.DecodeError:
            params[key] = value
    return params


def create_batch(
    config: LoadedConfig,
    store: Store,
    category: str,
    records_file: Path | str,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    max_records: int | None = None,
    concurrency: int = 5,
    error_policy: ErrorPolicy = "continue",
    params: Mapping[str, Any] | None = None,
    params_override: bool = False,
    priority: int = DEFAULT_PRIORITY,
) -> Batch:
    """Check every record, store the batch, put its first `concurrency` jobs."""
    if concurrency < 1:
        raise BatchError(f"concurrency must be at least 1, got {concurrency}")
    name = config.category_name(category)
    job_type = load_listener(config.listener_module(name)).job_data_type
    batch_id = new_batch_id()
    path = Path(records_file)
    if not path.is_file():
        raise BatchError(f"{path}: records file not found")
    records = RecordsFile(path, job_type, batch_id, params or {}, params_override)
    with tempfile.TemporaryFile() as spool:
        count = _spool(records, spool)  # every record checked; none held in memory
        if not count:
            raise BatchError(f"{path}: no records")
        total = min(count, max_records) if max_records else count
        position = _feed_order(count, random.Random(seed) if shuffle else None)
        spool.seek(0)
        items = ((position(index), *_unspool(line)) for index, line in enumerate(spool)
                 if position(index) < total)
        return _create(config, store, records, items, Batch(
            batch_id=batch_id, category=name, total=total, concurrency=concurrency,
            error_policy=error_policy, priority=priority, created_at=time.time()))


def _create(config: LoadedConfig, store: Store, records: RecordsFile,
            items: Iterator[tuple[int, str, bytes]], batch: Batch) -> Batch:
    """Store the batch and its items, then put its first jobs."""
    from bystroq.feeder import Feeder

    with Producer(config) as producer:
        feeder = Feeder(config, store, producer)
        try:
            batch.watermarks = feeder.last_ids()
            try:
                store.create_batch(batch, items)
            except DuplicateItem as exc:
                rows = [*records.rows_with(exc.submission_id), *[str(records.path)] * 2]
                raise BatchError(f"{rows[1]}: submissionID {exc.submission_id!r} is already "
                                 f"used at {rows[0]}; give each record its own; nothing was "
                                 "created") from None
            feeder.feed(batch)
        finally:
            feeder.close()
    return store.get_batch(batch.batch_id) or batch


def _spool(records: RecordsFile, spool: IO[bytes]) -> int:
    """Write each checked job as a line (JSON submissionID, tab, body); how many."""
    count = 0
    for _, submission_id, body in records.jobs():
        spool.write(b"%s\t%s\n" % (_ENCODE(submission_id), body))
        count += 1
    return count


def _unspool(line: bytes) -> tuple[str, bytes]:
    submission_id, _, body = line.rstrip(b"\n").partition(b"\t")
    return _DECODE_ID(submission_id), body


def _feed_order(count: int, rng: random.Random | None) -> Callable[[int], int]:
    """File index -> feed position: a permutation kept as 4 bytes a record."""
    if rng is None:
        return lambda index: index
    order = array("I", range(count))
    rng.shuffle(order)
    return order.__getitem__


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


def batch_status(store: Store, batch_id: str) -> BatchStatus:
    batch = store.get_batch(batch_id)
    if batch is None:
        raise BystroqError(f"no batch {batch_id!r} in {store.url}")
    counts = store.count_by_state(batch_id)
    counts["pending"] = batch.total - batch.fed
    done = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
    if batch.state == "cancelled":  # never put: they will not run
        done += counts["pending"]
    end = batch.finished_at or time.time()
    elapsed = max(end - batch.created_at, 1e-6)
    rate = done / elapsed if done else None
    eta = (batch.total - done) / rate if rate and batch.state == "running" else None
    failures = store.batch_records(batch_id, ["failed"], limit=FAILURES_SHOWN)
    return BatchStatus(batch, counts, done, 100.0 * done / batch.total, rate, eta, failures)


def cancel_batch(store: Store, batch_id: str, reason: str = "batch cancelled") -> str:
    """No new jobs; queued ones deleted; running ones stopped by their workers."""
    batch = store.get_batch(batch_id)
    if batch is None:
        raise BystroqError(f"no batch {batch_id!r} in {store.url}")
    if not store.finish_batch(batch_id, "cancelled", reason):
        raise BystroqError(f"{batch_id}: already {batch.state}; nothing to cancel")
    return f"{batch_id}: cancelled; " + cancel_active(store, batch_id, reason)


def cancel_active(store: Store, batch_id: str, reason: str,
                  states: Sequence[str] = ACTIVE_STATES) -> str:
    """Cancel the batch's records in `states`; says how many were deleted or asked to stop."""
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
    return f"{deleted} queued jobs deleted, {requested} running jobs asked to stop"


WAIT_POLL_S = 0.2


def wait_for_batch(
    store: Store, batch_id: str, consumer: Consumer | None,
    show: Callable[[BatchStatus], None] | None = None,
) -> BatchStatus:
    """Until the batch ends: with a consumer, apply its events and feed it meanwhile."""
    shown_at = 0.0
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
        if ended:
            return status
        if not busy:
            time.sleep(WAIT_POLL_S)
