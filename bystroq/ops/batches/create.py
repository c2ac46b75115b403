"""Creating a batch: one category run over the records of a JSON-lines or CSV file.

`create_batch` reads and checks every record before anything is written (see
bystroq.ops.batches.files), spooling the jobs to a temporary file rather than holding them,
stores the batch and its jobs in one transaction, and puts the first `concurrency` jobs; the
feeder (beside every `bystroq consume`) puts the next one each time one finishes. See
bystroq.ops.batches.feeder.
"""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from bystroq.config import DEFAULT_PRIORITY, LoadedConfig
from bystroq.errors import BatchError, DuplicateItem
from bystroq.listener import load_listener
from bystroq.ops.batches.feeder import Feeder
from bystroq.ops.batches.files import RecordsFile
from bystroq.producer import Producer
from bystroq.records.batchstore import Batch, ErrorPolicy
from bystroq.records.store import BatchStore

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
    store: BatchStore,
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
    resolved = config.resolve(category)
    name = resolved.name
    job_type = load_listener(resolved.listener).job_data_type
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


def _create(config: LoadedConfig, store: BatchStore, records: RecordsFile,
            items: Iterator[tuple[int, str, bytes]], batch: Batch) -> Batch:
    """Store the batch and its items, then put its first jobs."""
    with Producer(config, recorder=None) as producer:  # the feeder writes its records
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
