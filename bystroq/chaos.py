"""Chaos scenarios: real servers and workers, killed mid-run; every job must complete.

Used by tests/test_chaos.py (one scenario per test) and scripts/chaos (all, as a table).
Each scenario starts its own beanstalkd servers and worker processes and stops them all.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import greenstalk
import msgspec

from bystroq.config import LoadedConfig
from bystroq.producer import Producer
from bystroq.testing import Beanstalkd, config_for, config_text, wait_until


@dataclass
class Report:
    """One scenario's outcome: lost must be 0."""

    scenario: str
    submitted: int
    completed: int = 0
    lost: int = 0
    ran_twice: int = 0
    buried: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class Run:
    """Servers, a config file for them, worker processes, and the events they produced."""

    def __init__(self, stack: ExitStack, servers: list[Beanstalkd], workdir: Path,
                 extra: str = "") -> None:
        self.stack = stack
        self.servers = servers
        self.workdir = workdir
        self.prefix = f"c{uuid.uuid4().hex[:6]}-"
        addresses = [s.address for s in servers]
        self.config: LoadedConfig = config_for(addresses, prefix=self.prefix, extra=extra)
        self.config_file = workdir / "beanstalk.yml"
        self.config_file.write_text(config_text(addresses, prefix=self.prefix, extra=extra))
        self.started: Counter[object] = Counter()
        self.completed: Counter[object] = Counter()
        self.failed: Counter[object] = Counter()

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bystroq", "--log-level", "warning", "--config",
             str(self.config_file), "listen", "--tube", "echo", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.stack.callback(_stop, proc)
        return proc

    def collect(self) -> None:
        """Read (and consume) every ready event on every server that is up."""
        tube = self.config.category("echo").events
        for server in self.servers:
            if server.proc is None:
                continue
            try:
                with greenstalk.Client((server.host, server.port), encoding=None,
                                       watch=tube) as client:
                    while True:
                        try:
                            job = client.reserve(0)
                        except greenstalk.TimedOutError:
                            break
                        event = msgspec.json.decode(job.body)
                        counter = {"started": self.started, "completed": self.completed,
                                   "failed": self.failed}.get(event["event"])
                        if counter is not None:
                            counter[event.get("submissionID", f"q{event.get('queueID')}")] += 1
                        client.delete(job)
            except OSError:
                continue

    def wait_for(self, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.collect()
            if done() or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def buried(self) -> int:
        total = 0
        tube = self.config.category("echo").submission
        for server in self.servers:
            with (
                greenstalk.Client((server.host, server.port), encoding=None) as client,
                suppress(greenstalk.NotFoundError),
            ):
                total += int(client.stats_tube(tube)["current-jobs-buried"])
        return total

    def report(self, name: str, ids: Sequence[object], started_at: float) -> Report:
        done = {i for i in ids if self.completed[i]}
        return Report(
            scenario=name, submitted=len(ids), completed=len(done), lost=len(ids) - len(done),
            ran_twice=sum(1 for i in ids if self.started[i] > 1), buried=self.buried(),
            wall_s=round(time.monotonic() - started_at, 1),
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _run(count: int, binlog: bool = False, extra: str = "") -> Iterator[Run]:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bystroq-chaos-")))
        servers = []
        for i in range(count):
            server = Beanstalkd(binlog_dir=workdir / f"binlog{i}" if binlog else None).start()
            stack.callback(server.kill)
            servers.append(server)
        yield Run(stack, servers, workdir, extra)


def _submit(run: Run, count: int, **fields: object) -> list[object]:
    ids: list[object] = [f"j{i}" for i in range(count)]
    with Producer(run.config) as producer:
        for submission_id in ids:
            producer.submit("echo", {"submissionID": submission_id, **fields})
    return ids


def _done_at_least(run: Run, ids: Sequence[object], count: int) -> bool:
    return sum(1 for i in ids if run.completed[i]) >= count


def killed_workers(jobs: int = 300, kills: int = 3) -> Report:
    """Two workers, ~50 ms jobs; one worker is SIGKILLed `kills` times and restarted."""
    with _run(1) as run:
        start = time.monotonic()
        ids = _submit(run, jobs, sleep_s=0.05)
        steady = run.worker()
        victim = run.worker()
        for k in range(kills):
            target = jobs * (k + 1) // (kills + 2)
            run.wait_for(functools.partial(_done_at_least, run, ids, target), 60)
            victim.kill()
            victim.wait()
            victim = run.worker()
        run.wait_for(lambda: all(run.completed[i] for i in ids), 60)
        assert steady.poll() is None
        report = run.report("SIGKILL a worker 3 times (2 workers)", ids, start)
        report.notes.append(f"kills={kills}")
        return report


def killed_server(jobs: int = 2000) -> Report:
    """beanstalkd with a binlog is SIGKILLed mid-run and started again on its port."""
    with _run(1, binlog=True) as run:
        start = time.monotonic()
        ids = _submit(run, jobs, sleep_s=0.002)
        run.worker("--concurrency", "2")
        run.wait_for(lambda: sum(1 for i in ids if run.completed[i]) >= jobs // 3, 60)
        run.servers[0].kill()
        run.servers[0].start()
        run.wait_for(lambda: all(run.completed[i] for i in ids), 60)
        return run.report("SIGKILL beanstalkd (binlog) mid-run", ids, start)


def server_away(jobs: int = 600) -> Report:
    """Three servers; one stops mid-run and comes back; submit never fails meanwhile."""
    with _run(3, binlog=True) as run:
        start = time.monotonic()
        run.worker("--concurrency", "2")
        ids: list[object] = [f"j{i}" for i in range(jobs)]
        errors: list[str] = []

        def produce() -> None:
            with Producer(run.config, wait_s=10) as producer:
                for submission_id in ids:
                    try:
                        producer.submit("echo", {"submissionID": submission_id})
                    except Exception as exc:
                        errors.append(repr(exc))
                    time.sleep(0.002)

        thread = threading.Thread(target=produce)
        thread.start()
        run.wait_for(lambda: sum(1 for i in ids if run.completed[i]) >= jobs // 4, 60)
        run.servers[1].kill()
        run.wait_for(lambda: sum(1 for i in ids if run.completed[i]) >= jobs // 2, 60)
        run.servers[1].start()
        thread.join()
        run.wait_for(lambda: all(run.completed[i] for i in ids), 60)
        report = run.report("one of 3 servers stops and returns", ids, start)
        report.notes.append(f"submit errors={len(errors)}")
        if errors:
            report.lost = max(report.lost, len(errors))
        return report


def poison_job(others: int = 100, max_attempts: int = 3) -> Report:
    """A handler that kills its worker (os._exit): buried after max_attempts; the rest run."""
    with _run(1, extra=f"max_attempts: {max_attempts}") as run:
        start = time.monotonic()
        with Producer(run.config) as producer:
            producer.submit("echo", {"submissionID": "poison", "exit_code": 1})
        ids = _submit(run, others)
        worker = run.worker()
        deaths = 0

        def done() -> bool:
            nonlocal worker, deaths
            if worker.poll() is not None:
                deaths += 1
                worker = run.worker()
            return all(run.completed[i] for i in ids) and run.failed["poison"] >= 1

        run.wait_for(done, 60)
        report = run.report("poison job (os._exit) among 100", ids, start)
        report.notes.append(f"worker deaths={deaths}, poison failed events={run.failed['poison']}")
        return report


SCENARIOS: dict[str, Callable[[], Report]] = {
    "killed_workers": killed_workers,
    "killed_server": killed_server,
    "server_away": server_away,
    "poison_job": poison_job,
}


def wait_started(run: Run, count: int) -> None:
    tube = run.config.category("echo").submission
    wait_until(lambda: _reserved(run, tube) >= count, timeout_s=30)


def _reserved(run: Run, tube: str) -> int:
    with greenstalk.Client((run.servers[0].host, run.servers[0].port), encoding=None) as client:
        return int(client.stats_tube(tube)["current-jobs-reserved"])
