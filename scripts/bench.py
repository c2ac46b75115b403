"""Benchmark bystroq against a bare greenstalk loop doing the same beanstalkd commands.

Run through scripts/bench. Prints a Markdown table (median of --runs) and writes the raw
figures to bench-results/. No test asserts a speed; this script is where speed is checked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import greenstalk
import msgspec

import bystroq
import bystroq.log
from bystroq import Producer, Worker, WorkerOptions
from bystroq.messages import CompletedJobMessage, SubmittedJobMessage, encode
from bystroq.testing import Beanstalkd, config_for
from listeners.echo import EchoJob

Result = dict[str, float]


def bare_submit(address: tuple[str, int], tube: str, n: int) -> float:
    """Seconds for n puts of an echo job body from a plain greenstalk client."""
    with greenstalk.Client(address, encoding=None, use=tube) as client:
        start = time.perf_counter()
        for i in range(n):
            client.put(encode(EchoJob(submissionID=i)))
        return time.perf_counter() - start


def bystroq_submit(server: Beanstalkd, prefix: str, n: int) -> float:
    config = config_for([server.address], prefix=prefix)
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID=-1))  # connect outside the timing
        start = time.perf_counter()
        for i in range(n):
            producer.submit("echo", EchoJob(submissionID=i))
        return time.perf_counter() - start


def bare_work(address: tuple[str, int], tube: str, events: str, n: int) -> float:
    """Seconds for a plain loop: reserve, put started, put completed, delete."""
    decoder = msgspec.json.Decoder(EchoJob)
    with greenstalk.Client(address, encoding=None, watch=tube, use=events) as client:
        start = time.perf_counter()
        for _ in range(n):
            job = client.reserve(5)
            data = decoder.decode(job.body)
            client.put(encode(SubmittedJobMessage(submissionID=data.submissionID)))
            client.put(encode(CompletedJobMessage(submissionID=data.submissionID)))
            client.delete(job)
        return time.perf_counter() - start


def bystroq_work(server: Beanstalkd, prefix: str, n: int) -> float:
    config = config_for([server.address], prefix=prefix)
    with Worker(config, "echo", options=WorkerOptions(max_jobs=n)) as worker:
        start = time.perf_counter()
        worker.run()
        elapsed = time.perf_counter() - start
    assert worker.counts[bystroq.Outcome.COMPLETED] == n, worker.counts
    return elapsed


def fill(address: tuple[str, int], tube: str, n: int) -> None:
    with greenstalk.Client(address, encoding=None, use=tube) as client:
        for i in range(n):
            client.put(encode(EchoJob(submissionID=i)))


def median_rate(runs: int, n: int, once: Callable[[], float]) -> tuple[float, list[float]]:
    rates = [n / once() for _ in range(runs)]
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test")
    args = parser.parse_args()
    n, runs = (2_000, 1) if args.quick else (args.jobs, args.runs)
    bystroq.log.configure(level="warning")

    server = Beanstalkd().start()
    address = (server.host, server.port)
    try:
        def fresh() -> str:
            return f"b{uuid.uuid4().hex[:8]}-"

        figures: dict[str, tuple[float, list[float]]] = {}
        figures["submit: bare greenstalk put loop"] = median_rate(
            runs, n, lambda: bare_submit(address, fresh() + "echo", n))
        figures["submit: bystroq Producer.submit"] = median_rate(
            runs, n, lambda: bystroq_submit(server, fresh(), n))

        def bare_once() -> float:
            prefix = fresh()
            fill(address, prefix + "echo", n)
            return bare_work(address, prefix + "echo", prefix + "echo_events", n)

        def bystroq_once() -> float:
            prefix = fresh()
            fill(address, prefix + "echo", n)
            return bystroq_work(server, prefix, n)

        figures["worker: bare loop (reserve, put, put, delete)"] = median_rate(runs, n, bare_once)
        figures["worker: bystroq inline, 1 process"] = median_rate(runs, n, bystroq_once)
    finally:
        server.kill()

    submit_ratio = (figures["submit: bystroq Producer.submit"][0]
                    / figures["submit: bare greenstalk put loop"][0])
    work_ratio = (figures["worker: bystroq inline, 1 process"][0]
                  / figures["worker: bare loop (reserve, put, put, delete)"][0])
    print(f"\n{n} no-op echo jobs, median of {runs}; {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, bystroq {bystroq.__version__}, "
          f"greenstalk {greenstalk.__version__}\n")
    print("| what | jobs/s (median) | runs |")
    print("|---|---:|---|")
    for name, (median, rates) in figures.items():
        print(f"| {name} | {median:,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} |")
    print(f"\nsubmit ratio bystroq/bare: {submit_ratio:.2f} (target >= 0.8)")
    print(f"worker ratio bystroq/bare: {work_ratio:.2f} (target >= 0.7)")
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"core-{stamp}.json").write_text(json.dumps({
        "jobs": n, "runs": runs, "cores": os.cpu_count(), "python": platform.python_version(),
        "figures": {k: {"median": v[0], "runs": v[1]} for k, v in figures.items()},
        "submit_ratio": submit_ratio, "worker_ratio": work_ratio,
    }, indent=2))


if __name__ == "__main__":
    main()
