"""bystroq's own paths against bare loops doing the same commands, measured in rounds.

Every round runs each pair (a bare loop and the bystroq path that does its work) once, in an
order that rotates from round to round, on a fresh tube; a ratio is taken within its round
and the report gives the median ratio over the rounds. These 2-core machines drift by up to
2x between runs, so only ratios measured side by side mean anything.

The bystroq side is measured two ways: in this process (library calls), and through the CLI
at its defaults (`bystroq listen --burst`, `submit --file`, `consume --burst`, log level
info) in a process of its own. A CLI run's time is its wall time minus the start-up of the
same command line doing nothing (`bystroq --version`, measured in the same round), so the
figure is the command's own work.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bench_metrics  # a sibling script (scripts/ is on the path)
import greenstalk
import msgspec

import bystroq.log
from bystroq import Producer, Worker, WorkerOptions
from bystroq.examples.echo import EchoJob
from bystroq.messages import CompletedJobMessage, SubmittedJobMessage, encode
from bystroq.records import open_store
from bystroq.testing import Beanstalkd, config_for, config_text

Seconds = Callable[[], float]


@dataclass(frozen=True)
class Pair:
    """A bystroq path and the bare loop it is held against, both doing `jobs` jobs."""

    name: str
    bare: str  # what the bare side does
    bystroq: Callable[[str], float]  # prefix -> seconds
    baseline: Callable[[str], float]
    jobs: int


@dataclass
class Figures:
    """Seconds of each side, and the ratio bystroq/bare (by rate), per round."""

    bare_s: list[float] = field(default_factory=list)
    bystroq_s: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [b / s for b, s in zip(self.bare_s, self.bystroq_s, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def body(i: int) -> bytes:
    return encode(EchoJob(submissionID=i))


class Bench:
    """One beanstalkd, a directory for configs and SQLite files, and the pairs."""

    def __init__(self, jobs: int, submit_jobs: int) -> None:
        self.jobs, self.submit_jobs = jobs, submit_jobs
        self.server = Beanstalkd().start()
        self.address = (self.server.host, self.server.port)
        self.tmp = Path(tempfile.mkdtemp(prefix="bystroq-bench-"))
        self.jobs_file = self.tmp / "jobs.jsonl"
        self.jobs_file.write_bytes(b"".join(body(i) + b"\n" for i in range(submit_jobs)))

    def close(self) -> None:
        self.server.kill()

    # -- helpers -----------------------------------------------------------------------

    def fill(self, tube: str, n: int) -> None:
        """n jobs on `tube`, pipelined (filling is not what is measured)."""
        from bystroq.servers import Connection, Server, exchange

        conn = Connection(Server(*self.address), use=tube)
        try:
            conn.use_tube(tube)
            for start in range(0, n, 500):
                exchange(conn, [b"put 65536 0 60 %d\r\n%s\r\n" % (len(b), b)
                                for b in map(body, range(start, min(n, start + 500)))])
        finally:
            conn.close()

    def config_file(self, prefix: str, records: str | None = None) -> Path:
        path = self.tmp / f"{prefix}config.yml"
        path.write_text(config_text([self.server.address], prefix=prefix, records=records))
        return path

    def cli(self, prefix: str, args: Sequence[str], records: str | None = None) -> float:
        config = self.config_file(prefix, records)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bystroq", "--config", str(config), *args],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=Path(__file__).resolve().parent.parent, env=_env())
        return time.perf_counter() - start

    def startup(self) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bystroq", "--version"], check=True,
                       stdout=subprocess.DEVNULL, env=_env())
        return time.perf_counter() - start

    # -- bare loops --------------------------------------------------------------------

    def bare_work(self, prefix: str) -> float:
        """reserve-with-timeout 0, put started, put completed, delete: one job at a time."""
        self.fill(prefix + "echo", self.jobs)
        decoder = msgspec.json.Decoder(EchoJob)
        with greenstalk.Client(self.address, encoding=None, watch=prefix + "echo",
                               use=prefix + "echo_events") as client:
            start = time.perf_counter()
            for _ in range(self.jobs):
                job = client.reserve(0)
                data = decoder.decode(job.body)
                client.put(encode(SubmittedJobMessage(submissionID=data.submissionID)))
                client.put(encode(CompletedJobMessage(submissionID=data.submissionID)))
                client.delete(job)
            return time.perf_counter() - start

    def bare_put(self, prefix: str, n: int | None = None) -> float:
        n = self.submit_jobs if n is None else n
        bodies = [body(i) for i in range(n)]
        with greenstalk.Client(self.address, encoding=None, use=prefix + "echo") as client:
            start = time.perf_counter()
            for data in bodies:
                client.put(data)
            return time.perf_counter() - start

    def bare_consume(self, prefix: str) -> float:
        """reserve-with-timeout 0 and delete, one event at a time, over the events a worker
        made (started and completed for each job)."""
        tube = prefix + "echo_events"
        self._events(prefix)
        with greenstalk.Client(self.address, encoding=None, watch=tube) as client:
            start = time.perf_counter()
            while True:
                try:
                    job = client.reserve(0)
                except greenstalk.TimedOutError:
                    return time.perf_counter() - start
                msgspec.json.decode(job.body)
                client.delete(job)

    def raw_pipelined(self, prefix: str, k: int = 64) -> float:
        """The ceiling: the worker's five commands a job (reserve, stats-job, put started,
        put completed, delete), k jobs a write, over a raw socket."""
        self.fill(prefix + "echo", self.jobs)
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")

        def lines(count: int) -> list[bytes]:
            out = []
            for _ in range(count):
                line = reader.readline()
                status = line.split(None, 1)[0]
                if status in (b"RESERVED", b"OK"):
                    out.append(line + reader.read(int(line.split()[-1]) + 2))
                else:
                    out.append(line)
            return out

        sock.sendall(b"use %secho_events\r\nwatch %secho\r\nignore default\r\n" % (
            prefix.encode(), prefix.encode()))
        lines(3)
        start = time.perf_counter()
        done = 0
        while done < self.jobs:
            sock.sendall(b"reserve-with-timeout 0\r\n" * k)
            ids = [int(r.split()[1]) for r in lines(k) if r.startswith(b"RESERVED")]
            if not ids:
                break
            out = []
            for job_id in ids:
                started = encode(SubmittedJobMessage(submissionID=job_id))
                completed = encode(CompletedJobMessage(submissionID=job_id))
                out.append(b"stats-job %d\r\nput 65536 0 60 %d\r\n%s\r\nput 65536 0 60 %d\r\n"
                           b"%s\r\ndelete %d\r\n" % (job_id, len(started), started,
                                                     len(completed), completed, job_id))
            sock.sendall(b"".join(out))
            lines(4 * len(ids))
            done += len(ids)
        sock.close()
        return time.perf_counter() - start

    def _events(self, prefix: str) -> None:
        """The events of `self.jobs` echo jobs on the events tube (a worker run, untimed)."""
        self.fill(prefix + "echo", self.jobs)
        config = config_for([self.server.address], prefix=prefix)
        with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
            worker.run()

    # -- bystroq sides -----------------------------------------------------------------

    def worker_in_process(self, prefix: str) -> float:
        self.fill(prefix + "echo", self.jobs)
        config = config_for([self.server.address], prefix=prefix)
        with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
            start = time.perf_counter()
            worker.run()
            return time.perf_counter() - start

    def worker_cli(self, prefix: str) -> float:
        self.fill(prefix + "echo", self.jobs)
        return self.cli(prefix, ["listen", "--tube", "echo", "--burst"]) - self.startup()

    def submit_cli(self, prefix: str, records: bool) -> float:
        args = ["submit", "--tube", "echo", "--file", str(self.jobs_file)]
        if records:
            args += ["--records", f"sqlite:///{self.tmp / (prefix + 'submit.db')}"]
        else:
            args.append("--no-records")
        return self.cli(prefix, args) - self.startup()

    def submit_in_process(self, prefix: str) -> float:
        config = config_for([self.server.address], prefix=prefix)
        jobs = [EchoJob(submissionID=i) for i in range(self.submit_jobs)]
        with Producer(config) as producer:
            producer.submit("echo", EchoJob(submissionID=-1))  # connect outside the timing
            submit_many = getattr(producer, "submit_many", None)
            start = time.perf_counter()
            if submit_many is not None:
                submit_many("echo", jobs)
            else:
                for job in jobs:
                    producer.submit("echo", job)
            return time.perf_counter() - start

    def consume_cli(self, prefix: str, url: str) -> float:
        self._events(prefix)
        return self.cli(prefix, ["consume", "--tube", "echo", "--burst", "--records", url]
                        ) - self.startup()

    def consume_sqlite(self, prefix: str) -> float:
        return self.consume_cli(prefix, f"sqlite:///{self.tmp / (prefix + 'events.db')}")

    def consume_postgres(self, prefix: str) -> float:
        return self.consume_cli(prefix, postgres_url())


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def postgres_url() -> str:
    return os.environ.get("BYSTROQ_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_up() -> bool:
    try:
        with open_store(postgres_url()):
            return True
    except Exception:
        return False


def pairs(bench: Bench, with_postgres: bool) -> list[Pair]:
    found = [
        Pair("worker, `listen --burst` (CLI)", "reserve, put, put, delete",
             bench.worker_cli, bench.bare_work, bench.jobs),
        Pair("worker, in-process Worker.run()", "reserve, put, put, delete",
             bench.worker_in_process, bench.bare_work, bench.jobs),
        Pair("pipelined ceiling (raw socket, k = 64)", "reserve, put, put, delete",
             bench.raw_pipelined, bench.bare_work, bench.jobs),
        Pair("`submit --file`, records in SQLite (CLI)", "put loop",
             lambda p: bench.submit_cli(p, True), bench.bare_put, bench.submit_jobs),
        Pair("`submit --file --no-records` (CLI)", "put loop",
             lambda p: bench.submit_cli(p, False), bench.bare_put, bench.submit_jobs),
        Pair("Producer.submit_many, in process", "put loop",
             bench.submit_in_process, bench.bare_put, bench.submit_jobs),
        Pair("`consume --burst` into SQLite (CLI)", "reserve, delete",
             bench.consume_sqlite, bench.bare_consume, 2 * bench.jobs),
        *bench_metrics.pairs(bench),
    ]
    if with_postgres:
        found.append(Pair("`consume --burst` into PostgreSQL (CLI)", "reserve, delete",
                          bench.consume_postgres, bench.bare_consume, 2 * bench.jobs))
    return found


def run(jobs: int, submit_jobs: int, rounds: int, only: Sequence[str] = (),
        log: Callable[[str], None] = print) -> tuple[list[Pair], dict[str, Figures]]:
    """Every pair once a round, bare and bystroq side by side, the order rotating."""
    bench = Bench(jobs, submit_jobs)
    try:
        chosen = [p for p in pairs(bench, postgres_up())
                  if not only or any(o in p.name for o in only)]
        figures = {p.name: Figures() for p in chosen}
        for round_ in range(rounds):
            for index, pair in enumerate(chosen):
                sides = [("bare", pair.baseline), ("bystroq", pair.bystroq)]
                if (round_ + index) % 2:
                    sides.reverse()
                took = {side: fn(f"b{uuid.uuid4().hex[:8]}-") for side, fn in sides}
                figures[pair.name].bare_s.append(took["bare"])
                figures[pair.name].bystroq_s.append(took["bystroq"])
                log(f"round {round_ + 1}/{rounds}: {pair.name}: "
                    f"{took['bare'] / took['bystroq']:.2f}x")
        return chosen, figures
    finally:
        bench.close()


def report(chosen: Sequence[Pair], figures: dict[str, Figures], rounds: int) -> list[str]:
    lines = [f"### bystroq against bare loops, interleaved rounds (median of {rounds})", "",
             "| path | held against | jobs | bystroq jobs/s | bare jobs/s | ratio (median) | "
             "ratio, each round |", "|---|---|---:|---:|---:|---:|---|"]
    for pair in chosen:
        f = figures[pair.name]
        lines.append(
            f"| {pair.name} | {pair.bare} | {pair.jobs:,} | "
            f"{pair.jobs / statistics.median(f.bystroq_s):,.0f} | "
            f"{pair.jobs / statistics.median(f.bare_s):,.0f} | **{f.ratio:.2f}x** | "
            f"{', '.join(f'{r:.2f}' for r in f.ratios)} |")
    return lines


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--submit-jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated parts of path names")
    args = parser.parse_args()
    bystroq.log.configure(level="info")  # the CLI's default, for the in-process rows too
    chosen, figures = run(args.jobs, args.submit_jobs, args.rounds,
                          [o for o in args.only.split(",") if o],
                          log=lambda s: print(s, file=sys.stderr, flush=True))
    print("\n".join(report(chosen, figures, args.rounds)))
