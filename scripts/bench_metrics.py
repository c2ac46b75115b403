"""The cost of a worker's Prometheus metrics: the same in-process worker (burst, no-op echo
jobs) with a WorkerObserver counting into a registry, held against itself without one, side
by side in bench_core's interleaved rounds. The ratio is the rate with metrics over the rate
without (target: at least 0.95, i.e. within 5%).

Two rows: by wall time (throughput, as every other row), and by the worker process's CPU
time over the same run, which the other programs on a shared machine disturb far less.
`python scripts/bench_metrics.py` also prints the observer's own cost per job, in µs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from bystroq import Worker, WorkerOptions
from bystroq.metrics.worker import WorkerCollector
from bystroq.testing import config_for
from bystroq.worker.observe import NoObserver, WorkerObserver
from bystroq.worker.outcome import Outcome

if TYPE_CHECKING:
    from bench_core import Bench, Pair

NAME = "worker, metrics on (in process)"
CPU_NAME = "worker, metrics on (in process, CPU time)"


def worker_run(bench: Bench, prefix: str, metrics: bool,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds (by `clock`) for an in-process worker to run `bench.jobs` no-op jobs."""
    bench.fill(prefix + "echo", bench.jobs)
    config = config_for([bench.server.address], prefix=prefix)
    observer = WorkerCollector(CollectorRegistry()).observer("echo", 1) if metrics else None
    with Worker(config, "echo", options=WorkerOptions(burst=True, observer=observer)) as worker:
        start = clock()
        worker.run()
        return clock() - start


def pairs(bench: Bench) -> list[Pair]:
    from bench_core import Pair

    cpu = time.process_time
    return [
        Pair(NAME, "the same worker, metrics off",
             lambda prefix: worker_run(bench, prefix, True),
             lambda prefix: worker_run(bench, prefix, False), bench.jobs),
        Pair(CPU_NAME, "the same worker, metrics off",
             lambda prefix: worker_run(bench, prefix, True, cpu),
             lambda prefix: worker_run(bench, prefix, False, cpu), bench.jobs),
    ]


def observer_cost_us(observer: WorkerObserver, jobs: int = 200_000) -> float:
    """µs a job spends in the observer: the calls a completed job makes."""
    start = time.perf_counter()
    for _ in range(jobs):
        observer.reserve_waited(0.0001, True)
        observer.queue_waited(0)
        observer.handler_ran(0.0001)
        observer.job_left()
        observer.finished(Outcome.COMPLETED)
    return (time.perf_counter() - start) / jobs * 1e6


if __name__ == "__main__":
    for _ in range(3):
        on = observer_cost_us(WorkerCollector(CollectorRegistry()).observer("echo", 1))
        off = observer_cost_us(NoObserver())
        print(f"observer per job: metrics {on:.2f} µs, none {off:.2f} µs")
