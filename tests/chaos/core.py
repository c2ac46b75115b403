"""Chaos scenarios: real servers and workers, killed mid-run; every job must complete.

Used by tests/test_chaos.py (one scenario per test) and scripts/chaos (all, as a table);
scenarios of other topics live beside this module and are gathered in tests/chaos/__init__.
Each scenario starts its own beanstalkd servers and worker processes and stops them all.
"""

from __future__ import annotations

import functools
import os
import random
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
from bystroq.errors import SubmitOutcomeUnknown
from bystroq.producer import Producer
from bystroq.testing import Beanstalkd, config_for, config_text, wait_until


@dataclass
class Report:
    """One scenario's outcome: lost, two_holders and wrong_records must be 0."""

    scenario: str
    submitted: int
    completed: int = 0
    lost: int = 0
    ran_twice: int = 0
    buried: int = 0
    wall_s: float = 0.0
    two_holders: int = 0  # jobs reported by a worker that no longer held them
    wrong_records: int = 0  # records that disagree with the events the store logged
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.two_holders == 0 and self.wrong_records == 0


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

    def worker(self, *args: str, category: str = "echo") -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bystroq", "--log-level", "warning", "--config",
             str(self.config_file), "listen", "--tube", category, *args],
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
def chaos_run(count: int, binlog: bool = False, extra: str = "") -> Iterator[Run]:
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
    with chaos_run(1) as run:
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
    with chaos_run(1, binlog=True) as run:
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
    with chaos_run(3, binlog=True) as run:
        start = time.monotonic()
        run.worker("--concurrency", "2")
        ids: list[object] = [f"j{i}" for i in range(jobs)]
        errors: list[str] = []
        unknown: list[object] = []  # told "outcome unknown": the job may or may not be in

        def produce() -> None:
            with Producer(run.config, wait_s=10) as producer:
                for submission_id in ids:
                    try:
                        producer.submit("echo", {"submissionID": submission_id})
                    except SubmitOutcomeUnknown:
                        unknown.append(submission_id)
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
        known = [i for i in ids if i not in unknown]  # a put that was never answered
        run.wait_for(lambda: all(run.completed[i] for i in known), 60)  # may not be in
        report = run.report("one of 3 servers stops and returns", known, start)
        report.notes.append(f"submit errors={len(errors)}")
        if unknown:
            report.notes.append(f"outcome unknown={len(unknown)}")
        if errors:
            report.lost = max(report.lost, len(errors))
        return report


def poison_job(others: int = 100, max_attempts: int = 3) -> Report:
    """A handler that kills its worker (os._exit): buried after max_attempts; the rest run."""
    with chaos_run(1, extra=f"max_attempts: {max_attempts}") as run:
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
        if run.failed["poison"] < 1 or report.buried != 1:
            report.lost += 1  # the poison job's own outcome went missing
        return report


def _sigterm_mid_run(run: Run, jobs: int, sleep_s: float, drain_s: float) -> tuple[
        list[object], int]:
    """`jobs` slow jobs all running on one worker, then SIGTERM: the ids and its exit code."""
    ids = _submit(run, jobs, sleep_s=sleep_s)
    worker = run.worker("--concurrency", str(jobs), "--drain-timeout", str(drain_s))
    wait_started(run, jobs)
    worker.send_signal(signal.SIGTERM)
    return ids, worker.wait(timeout=60)


def drained_on_sigterm(jobs: int = 8) -> Report:
    """SIGTERM while `jobs` slow jobs run: they finish within the drain timeout, the worker
    exits 0 and nothing stays reserved."""
    with chaos_run(1) as run:
        start = time.monotonic()
        ids, code = _sigterm_mid_run(run, jobs, sleep_s=1.0, drain_s=30)
        run.wait_for(lambda: all(run.completed[i] for i in ids), 10)
        report = run.report(f"SIGTERM with {jobs} jobs running (drain 30 s)", ids, start)
        reserved = _reserved(run, _tube(run))
        report.notes.append(f"exit code={code}, reserved after={reserved}")
        if code != 0 or reserved:
            report.lost = max(report.lost, 1)
        return report


def released_on_short_drain(jobs: int = 8) -> Report:
    """SIGTERM with a drain timeout shorter than the jobs: they are released at once and a
    second worker completes them."""
    with chaos_run(1) as run:
        start = time.monotonic()
        ids, code = _sigterm_mid_run(run, jobs, sleep_s=2.0, drain_s=0.3)
        run.worker("--concurrency", str(jobs))
        run.wait_for(lambda: all(run.completed[i] for i in ids), 60)
        report = run.report(f"SIGTERM, drain 0.3 s, {jobs} jobs released", ids, start)
        report.notes.append(f"first worker exit code={code}")
        return report


def server_restarted(jobs: int = 200) -> Report:
    """The network to the server is cut (the server restarts, without binlog, while no job
    is reserved): the same worker process reconnects and goes on."""
    with chaos_run(1) as run:
        start = time.monotonic()
        worker = run.worker()
        first = _submit(run, jobs // 2)
        run.wait_for(lambda: all(run.completed[i] for i in first), 60)
        run.servers[0].kill()
        run.servers[0].start()
        second: list[object] = [f"k{i}" for i in range(jobs - len(first))]
        with Producer(run.config) as producer:
            for submission_id in second:
                producer.submit("echo", {"submissionID": submission_id})
        run.wait_for(lambda: all(run.completed[i] for i in second), 60)
        report = run.report("server restarted (no binlog) under a worker", [*first, *second],
                            start)
        alive = worker.poll() is None
        report.notes.append(f"same worker alive={alive}")
        if not alive:
            report.lost = max(report.lost, 1)
        return report


def fuzzed_bodies(count: int = 200, seed: int = 1) -> Report:
    """Random bytes, random JSON and near-valid jobs through one real worker: each ends as
    a failed event and a buried job, and the worker never dies."""
    rng = random.Random(seed)
    valid = {"submissionID": 1, "sleep_s": 0, "fail": "always"}
    with chaos_run(1) as run:
        start = time.monotonic()
        worker = run.worker()
        queue_ids: list[object] = []
        with Producer(run.config) as producer:
            for n in range(count):
                kind = n % 3
                if kind == 0:
                    body = rng.randbytes(rng.randint(0, 200))
                elif kind == 1:
                    body = msgspec.json.encode(rng.choice(
                        [None, 1, "x", [1, 2], {"a": 1}, {"submissionID": [1]}, 2.5]))
                else:
                    key = rng.choice(sorted(valid))
                    body = msgspec.json.encode({**valid, key: rng.choice([[1], {}, True])})
                queue_ids.append(f"q{producer.submit('echo', body).job_id}")
        # Every body ends failed: invalid ones by queueID, valid ones fail in the handler.
        run.wait_for(lambda: run.buried() == count, 60)
        report = run.report(f"{count} fuzzed bodies through one worker", queue_ids, start)
        failed = sum(run.failed.values())
        report.completed = failed  # here, done means: failed event published and buried
        report.lost = count - min(failed, report.buried)
        alive = worker.poll() is None
        report.notes.append(f"failed events={failed}, worker alive={alive}")
        if not alive:
            report.lost = max(report.lost, 1)
        return report


SCENARIOS: dict[str, Callable[[], Report]] = {
    "killed_workers": killed_workers,
    "killed_server": killed_server,
    "server_away": server_away,
    "poison_job": poison_job,
    "drained_on_sigterm": drained_on_sigterm,
    "released_on_short_drain": released_on_short_drain,
    "fuzzed_bodies": fuzzed_bodies,
    "server_restarted": server_restarted,
}


def _tube(run: Run) -> str:
    return run.config.category("echo").submission


def wait_started(run: Run, count: int) -> None:
    wait_until(lambda: _reserved(run, _tube(run)) >= count, timeout_s=30)


def _reserved(run: Run, tube: str) -> int:
    with greenstalk.Client((run.servers[0].host, run.servers[0].port), encoding=None) as client:
        try:
            return int(client.stats_tube(tube)["current-jobs-reserved"])
        except greenstalk.NotFoundError:  # no job left: the tube is gone
            return 0


def jobs_in(run: Run, tube: str, states: Sequence[str] = ("ready", "reserved")) -> int:
    """Jobs of `tube` in `states` on the run's first server (0 when the tube is gone)."""
    server = run.servers[0]
    with greenstalk.Client((server.host, server.port), encoding=None) as client:
        try:
            stats = client.stats_tube(tube)
        except greenstalk.NotFoundError:
            return 0
    counts: dict[str, object] = dict(stats)
    return sum(int(str(counts[f"current-jobs-{state}"])) for state in states)


@contextmanager
def small_disk(size: str = "4m") -> Iterator[Path | None]:
    """A tmpfs of `size` mounted for the caller, or None where mounting is not allowed."""
    mount = Path(tempfile.mkdtemp(prefix="bystroq-disk-"))
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        mount.rmdir()
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def fill(path: Path) -> None:
    """Write `path` until its file system is full."""
    # Unbuffered: a write the disk refused leaves nothing behind for close() to retry.
    with path.open("wb", buffering=0) as filler, suppress(OSError):
        while True:
            filler.write(b"\0" * 65536)
            os.fsync(filler.fileno())
