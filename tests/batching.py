"""Helpers for the batch tests: a worker in a thread, a records file, running a batch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bystroq import Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records import Store
from bystroq.testing import wait_until


@contextmanager
def running_worker(config: LoadedConfig, concurrency: int = 8) -> Iterator[Worker]:
    worker = Worker(config, "echo", options=WorkerOptions(concurrency=concurrency,
                                                          reserve_timeout_s=1))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(0)
        thread.join(timeout=30)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_batch(config: LoadedConfig, store: Store, batch_id: str, check: Any = None) -> None:
    """Consume and feed until the batch ends, calling `check()` after every round."""
    with ConsumeAndFeed(config, store, feed_grace_s=1) as consumer:
        def ended() -> bool:
            consumer.step()
            consumer.feed(force=True)
            if check is not None:
                check()
            batch = store.get_batch(batch_id)
            return batch is not None and batch.state != "running"

        wait_until(ended, timeout_s=90)


def put_order(store: Store, batch_id: str) -> list[str]:
    records = store.list(batch=batch_id, limit=10_000)
    return [r.submission_id for r in sorted(records, key=lambda r: r.queue_id or 0)]
