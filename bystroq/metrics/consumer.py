"""The events consumer's metrics: `ConsumerMetrics` is the ConsumerObserver that counts
events applied by kind, how late they were applied, malformed events and store errors.
Labels are the category, the event kind (a fixed vocabulary) and the kind of store error."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

from bystroq.consumer import StoreError
from bystroq.records.model import IncomingEvent

LAG_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
                 1800, 3600)


class ConsumerMetrics:
    """A consumer's metric families in `registry` (one consumer per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._events = Counter(
            "bystroq_consumer_events", "Events applied to the records store, by category "
            "and event", ["category", "event"], registry=registry)
        self._lag = Histogram(
            "bystroq_consumer_apply_lag_seconds", "From an event's `at` (when the worker "
            "wrote it) to its being applied", ["category"], buckets=LAG_BUCKETS_S,
            registry=registry)
        self._malformed = Counter(
            "bystroq_consumer_malformed", "Events that did not decode, buried",
            ["category"], registry=registry)
        self._store_errors = Counter(
            "bystroq_consumer_store_errors", "Store errors: `refused` (an event the store "
            "would not take, buried), `unavailable` (a batch put back while the store was "
            "away)", ["category", "error"], registry=registry)
        self._children: dict[tuple[str, str], Callable[[], None]] = {}

    def applied(self, category: str, events: Sequence[IncomingEvent]) -> None:
        now = time.time()
        lag = self._lag.labels(category).observe
        for event in events:
            key = (category, event.event)
            count = self._children.get(key)
            if count is None:
                count = self._children[key] = self._events.labels(*key).inc
            count()
            lag(max(0.0, now - event.at))

    def malformed(self, category: str) -> None:
        self._malformed.labels(category).inc()

    def store_error(self, category: str, error: StoreError) -> None:
        self._store_errors.labels(category, error).inc()
