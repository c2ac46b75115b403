"""A worker's metrics: `WorkerMetrics` is the WorkerObserver that counts them.

`WorkerFamilies(registry)` registers the metric families once per registry;
`families.observer(category, slots)` gives a category's observer, with every labelled child
bound in advance so that a job costs a few increments and two histogram observations, not
label look-ups. Labels are the category and the outcome: never a job's id or body.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                      300, 600, 1800, 3600, 3 * 3600)
# The server's `age` is whole seconds.
QUEUE_WAIT_BUCKETS_S = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600,
                        86400)


class WorkerFamilies:
    """The worker's metric families in one registry (any number of categories)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "bystroq_worker_jobs", "Jobs a worker finished, by category and outcome",
            ["category", "outcome"], registry=registry)
        self.retries = Counter(
            "bystroq_worker_retries", "Jobs released to be tried again (a retrying event)",
            ["category"], registry=registry)
        self.buried = Counter(
            "bystroq_worker_buried", "Jobs the worker buried (failed, invalid, gave up)",
            ["category"], registry=registry)
        self.leases_lost = Counter(
            "bystroq_worker_leases_lost", "Jobs whose reservation was lost while held "
            "(nothing reported for that attempt)", ["category"], registry=registry)
        self.duration = Histogram(
            "bystroq_worker_job_duration_seconds", "How long handlers ran",
            ["category"], buckets=DURATION_BUCKETS_S, registry=registry)
        self.queue_wait = Histogram(
            "bystroq_worker_queue_wait_seconds", "How long a job waited from its put to its "
            "reserve (the server's age of the job, whole seconds)", ["category"],
            buckets=QUEUE_WAIT_BUCKETS_S, registry=registry)
        self.in_progress = Gauge(
            "bystroq_worker_jobs_in_progress", "Jobs the worker's slots hold now",
            ["category"], registry=registry)
        self.slots = Gauge(
            "bystroq_worker_slots", "Jobs the worker may hold at once (--concurrency)",
            ["category"], registry=registry)
        self.reserve_wait = Counter(
            "bystroq_worker_reserve_wait_seconds", "Time slots spent in reserve, waiting "
            "for a job", ["category"], registry=registry)
        self.reserve_timeouts = Counter(
            "bystroq_worker_reserve_timeouts", "Reserves that ended without a job",
            ["category"], registry=registry)

    def observer(self, category: str, slots: int) -> WorkerMetrics:
        """The observer for one category's worker (a worker with `slots` slots)."""
        self.slots.labels(category).set(slots)
        return WorkerMetrics(self, category)


class WorkerMetrics:
    """Counts one category's jobs (see bystroq.worker.observe for when each call comes)."""

    def __init__(self, families: WorkerFamilies, category: str) -> None:
        self._duration = families.duration.labels(category).observe
        self._queue_wait = families.queue_wait.labels(category).observe
        in_progress = families.in_progress.labels(category)
        self._taken, self._left = in_progress.inc, in_progress.dec
        self._reserve_wait = families.reserve_wait.labels(category).inc
        self._reserve_timeout = families.reserve_timeouts.labels(category).inc
        self._buried = families.buried.labels(category).inc
        # What each outcome increments: its own series, and the retries or leases lost.
        extra = {Outcome.RETRYING: families.retries.labels(category).inc,
                 Outcome.LOST: families.leases_lost.labels(category).inc}
        self._on: dict[Outcome, tuple[Callable[[], None], ...]] = {
            outcome: (families.jobs.labels(category, label).inc,
                      *((extra[outcome],) if outcome in extra else ()))
            for outcome, label in OUTCOME_LABELS.items()
        }

    def reserve_waited(self, seconds: float, got_job: bool) -> None:
        self._reserve_wait(seconds)
        if got_job:
            self._taken()
        else:
            self._reserve_timeout()

    def queue_waited(self, seconds: float) -> None:
        self._queue_wait(seconds)

    def handler_ran(self, seconds: float) -> None:
        self._duration(seconds)

    def job_left(self) -> None:
        self._left()

    def finished(self, outcome: Outcome) -> None:
        for count in self._on[outcome]:
            count()

    def buried(self) -> None:
        self._buried()
