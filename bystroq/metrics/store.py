"""The records store as `bystroq serve` sees it, read at scrape time: submissions and
batches by state (every state always present, 0 when none), and whether the store answered."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bystroq.records.model import STATES

BATCH_STATES = ("running", "completed", "failed", "cancelled")


class Counts(Protocol):
    def count_by_state(self, batch: str | None = None) -> dict[str, int]: ...

    def count_batches_by_state(self) -> dict[str, int]: ...


class StoreCollector(Collector):
    """Counts records and batches by state in the store `store()` gives (called at each
    scrape, so a store opened on first use is opened by the first scrape)."""

    def __init__(self, store: Callable[[], Counts]) -> None:
        self.store = store

    def describe(self) -> Iterator[Metric]:
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        up, submissions, batches = families = _families()
        try:
            store = self.store()
            by_state, batch_states = store.count_by_state(), store.count_batches_by_state()
        except Exception:  # the store is away: say so, and nothing else
            up.add_metric([], 0)
            return iter([up])
        up.add_metric([], 1)
        for state in (*STATES, *(s for s in by_state if s not in STATES)):
            submissions.add_metric([state], by_state.get(state, 0))
        for state in (*BATCH_STATES, *(s for s in batch_states if s not in BATCH_STATES)):
            batches.add_metric([state], batch_states.get(state, 0))
        return iter(families)


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily("bystroq_store_up", "1 if the records store answered this scrape"),
        GaugeMetricFamily("bystroq_submissions", "Submission records by state",
                          labels=["state"]),
        GaugeMetricFamily("bystroq_batches", "Batches by state", labels=["state"]),
    )
