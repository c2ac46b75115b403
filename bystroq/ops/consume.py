"""Consuming with batches: the events consumer, and the batch feeder beside it.

The consumer (bystroq.consumer) only applies events to the store. Running batches need
their next jobs put as earlier ones finish: `ConsumeAndFeed` runs the feeder after each
round of events, at most every FEED_INTERVAL_S unless a job finished. This is what
`bystroq consume` and `bystroq batch wait` run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bystroq.config import LoadedConfig
from bystroq.consumer import BATCH, Consumer, ConsumerObserver
from bystroq.errors import StoreUnavailable
from bystroq.ops.batches.feeder import DEFAULT_GRACE_S, Feeder
from bystroq.producer import Producer
from bystroq.records.store import BatchStore

FEED_INTERVAL_S = 0.5


class ConsumeAndFeed(Consumer):
    """An events consumer that also feeds the running batches of its categories."""

    def __init__(
        self, config: LoadedConfig, store: BatchStore, categories: Sequence[str] | None = None,
        batch: int = BATCH, feed_grace_s: float = DEFAULT_GRACE_S,
        observer: ConsumerObserver | None = None,
    ) -> None:
        super().__init__(config, store, categories, batch, observer)
        self.producer = Producer(config, recorder=None)  # the feeder writes its records
        self.feeder = Feeder(config, store, self.producer, feed_grace_s)
        self._fed_at = 0.0

    def after_round(self, applied: int, burst: bool) -> int:
        return self.feed(force=bool(applied) or burst)

    def feed(self, force: bool = False) -> int:
        """Let running batches put their next jobs (at most every FEED_INTERVAL_S unless
        forced, e.g. because a job finished); how many were put."""
        now = time.monotonic()
        if not force and now - self._fed_at < FEED_INTERVAL_S:
            return 0
        self._fed_at = now
        try:
            return self.feeder.step()
        except StoreUnavailable:
            return 0  # logged by the store; batches go on when it is back

    def close(self) -> None:
        self.feeder.close()
        self.producer.close()
        super().close()

    def __enter__(self) -> ConsumeAndFeed:
        return self
