"""A worker's metrics: `WorkerCollector` exports them, `WorkerMetrics` (a WorkerObserver)
counts them.

A job's calls only add to plain numbers kept per thread (a `_Tally` only its own thread
writes), so counting costs no lock and no label look-up; a scrape sums the tallies. Labels
are the category and the outcome: never a job's id or body.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bystroq.worker.outcome import Outcome

# The outcome label of each way a job can end (Outcome.NONE is no job, never counted).
OUTCOME_LABELS: dict[Outcome, str] = {
    Outcome.COMPLETED: "completed",
    Outcome.FAILED: "failed",
    Outcome.INVALID: "invalid",
    Outcome.GAVE_UP: "gave_up",
    Outcome.RETRYING: "retried",
    Outcome.CANCELLED: "cancelled",
    Outcome.RELEASED: "released",
    Outcome.LOST: "lease_lost",
}
_INDEX = {outcome: i for i, outcome in enumerate(OUTCOME_LABELS)}
_RETRIED, _LOST = _INDEX[Outcome.RETRYING], _INDEX[Outcome.LOST]
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0)
# The server's `age` is whole seconds.
QUEUE_WAIT_BUCKETS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                        10800.0, 43200.0, 86400.0)


class _Tally:
    """One thread's counts: only that thread writes them; a scrape reads and sums them."""

    __slots__ = ("buried", "duration", "duration_sum", "left", "outcomes", "reserve_s",
                 "taken", "timeouts", "wait", "wait_sum")

    def __init__(self) -> None:
        self.outcomes = [0] * len(OUTCOME_LABELS)
        self.duration = [0] * (len(DURATION_BUCKETS_S) + 1)  # per bucket; the last is +Inf
        self.wait = [0] * (len(QUEUE_WAIT_BUCKETS_S) + 1)
        self.duration_sum = self.wait_sum = self.reserve_s = 0.0
        self.taken = self.left = self.timeouts = self.buried = 0

    def add(self, other: _Tally) -> None:
        for name in ("outcomes", "duration", "wait"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for i, value in enumerate(theirs):
                mine[i] += value
        for name in ("duration_sum", "wait_sum", "reserve_s", "taken", "left", "timeouts",
                     "buried"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class WorkerMetrics:
    """Counts one category's jobs (see bystroq.worker.observe for when each call comes)."""

    def __init__(self, category: str, slots: int) -> None:
        self.category, self.slots = category, slots
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tallies: list[tuple[threading.Thread, _Tally]] = []
        self._retired = _Tally()  # the tallies of threads that ended

    def _tally(self) -> _Tally:
        try:
            tally: _Tally = self._local.tally
            return tally
        except AttributeError:
            tally = self._local.tally = _Tally()
            with self._lock:
                self._retire_ended()
                self._tallies.append((threading.current_thread(), tally))
            return tally

    def _retire_ended(self) -> None:
        """Fold the tallies of ended threads into one (slots come and go)."""
        live = []
        for thread, tally in self._tallies:
            if thread.is_alive():
                live.append((thread, tally))
            else:
                self._retired.add(tally)
        self._tallies = live

    def totals(self) -> _Tally:
        """Every thread's counts, summed."""
        total = _Tally()
        with self._lock:
            total.add(self._retired)
            for _, tally in self._tallies:
                total.add(tally)
        return total

    # -- the WorkerObserver calls ----------------------------------------------------------

    def reserve_waited(self, seconds: float, got_job: bool) -> None:
        tally = self._tally()
        tally.reserve_s += seconds
        if got_job:
            tally.taken += 1
        else:
            tally.timeouts += 1

    def queue_waited(self, seconds: float) -> None:
        tally = self._tally()
        tally.wait[bisect.bisect_left(QUEUE_WAIT_BUCKETS_S, seconds)] += 1
        tally.wait_sum += seconds

    def handler_ran(self, seconds: float) -> None:
        tally = self._tally()
        tally.duration[bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1
        tally.duration_sum += seconds

    def job_left(self) -> None:
        self._tally().left += 1

    def finished(self, outcome: Outcome) -> None:
        self._tally().outcomes[_INDEX[outcome]] += 1

    def buried(self) -> None:
        self._tally().buried += 1


class WorkerCollector(Collector):
    """The worker metrics of every category observed, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._categories: dict[str, WorkerMetrics] = {}
        registry.register(self)

    def observer(self, category: str, slots: int) -> WorkerMetrics:
        """The observer for a category's worker of `slots` slots (the same one each time
        for a category, so a worker started again goes on counting)."""
        metrics = self._categories.get(category)
        if metrics is None:
            metrics = self._categories[category] = WorkerMetrics(category, slots)
        metrics.slots = slots
        return metrics

    def describe(self) -> Iterator[Metric]:
        return iter(_Families().all())

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for category, metrics in list(self._categories.items()):
            families.add(category, metrics.slots, metrics.totals())
        return iter(families.all())


class _Families:
    def __init__(self) -> None:
        c = ["category"]
        self.jobs = CounterMetricFamily(
            "bystroq_worker_jobs", "Jobs a worker finished, by category and outcome",
            labels=[*c, "outcome"])
        self.retries = CounterMetricFamily(
            "bystroq_worker_retries", "Jobs released to be tried again (a retrying event)",
            labels=c)
        self.buried = CounterMetricFamily(
            "bystroq_worker_buried", "Jobs the worker buried (failed, invalid, gave up)",
            labels=c)
        self.leases_lost = CounterMetricFamily(
            "bystroq_worker_leases_lost", "Jobs whose reservation was lost while held "
            "(nothing reported for that attempt)", labels=c)
        self.duration = HistogramMetricFamily(
            "bystroq_worker_job_duration_seconds", "How long handlers ran", labels=c)
        self.queue_wait = HistogramMetricFamily(
            "bystroq_worker_queue_wait_seconds", "How long a job waited from its put to its "
            "reserve (the server's age of the job, whole seconds)", labels=c)
        self.in_progress = GaugeMetricFamily(
            "bystroq_worker_jobs_in_progress", "Jobs the worker's slots hold now", labels=c)
        self.slots = GaugeMetricFamily(
            "bystroq_worker_slots", "Jobs the worker may hold at once (--concurrency)",
            labels=c)
        self.reserve_wait = CounterMetricFamily(
            "bystroq_worker_reserve_wait_seconds", "Time slots spent in reserve, waiting "
            "for a job", labels=c)
        self.reserve_timeouts = CounterMetricFamily(
            "bystroq_worker_reserve_timeouts", "Reserves that ended without a job", labels=c)

    def add(self, category: str, slots: int, t: _Tally) -> None:
        labels = [category]
        for outcome, label in OUTCOME_LABELS.items():
            self.jobs.add_metric([category, label], t.outcomes[_INDEX[outcome]])
        self.retries.add_metric(labels, t.outcomes[_RETRIED])
        self.leases_lost.add_metric(labels, t.outcomes[_LOST])
        self.buried.add_metric(labels, t.buried)
        self.duration.add_metric(labels, _buckets(DURATION_BUCKETS_S, t.duration),
                                 t.duration_sum)
        self.queue_wait.add_metric(labels, _buckets(QUEUE_WAIT_BUCKETS_S, t.wait), t.wait_sum)
        self.in_progress.add_metric(labels, max(0, t.taken - t.left))
        self.slots.add_metric(labels, slots)
        self.reserve_wait.add_metric(labels, t.reserve_s)
        self.reserve_timeouts.add_metric(labels, t.timeouts)

    def all(self) -> list[Metric]:
        return [self.jobs, self.retries, self.buried, self.leases_lost, self.duration,
                self.queue_wait, self.in_progress, self.slots, self.reserve_wait,
                self.reserve_timeouts]


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, +Inf last, from counts per bucket."""
    out, total = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        total += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
    return out
