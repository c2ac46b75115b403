"""One system, one workload, one run of the benchmark, in a process of its own.

scripts/bench.py runs `bench_peers.py run SYSTEM WORKLOAD ...` once per run and reads the JSON
object on the last line of its stdout. Every system runs the same job, `echo` (sleep `sleep_s`,
return the message), and says when each job started and ended: the bare greenstalk loop and
bystroq in their events, the peers (Dramatiq, RQ, Celery on Redis) in their result stores.

A run starts its own beanstalkd (beanstalk systems) or flushes its own Redis database (peers,
before and after), and stops everything it started, its workers' child processes included,
on errors, SIGINT, SIGTERM and its own time limit too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent

SYSTEMS: dict[str, str] = {
    "bare": "bare greenstalk loop",
    "bystroq-inline-1": "bystroq inline, 1 process",
    "bystroq-inline-1x8": "bystroq inline, 1 process, 8 slots",
    "bystroq-inline-2": "bystroq inline, 2 processes",
    "bystroq-process-1": "bystroq process isolation, 1 process",
    "dramatiq": "Dramatiq, Redis (1 process, 8 threads)",
    "arq": "arq, Redis (1 process, asyncio, its defaults: 10 jobs at once, 0.5 s poll)",
    "rq": "RQ SimpleWorker, Redis",
    "celery-solo": "Celery solo pool, Redis",
    "celery-prefork-2": "Celery prefork (2 processes), Redis",
}
PEERS = ("dramatiq", "arq", "rq", "celery-solo", "celery-prefork-2")
WORKLOADS = ("throughput", "latency", "memory")

POLL_S = 0.02
STOP_TIMEOUT_S = 10.0
WARMUP_TIMEOUT_S = 60.0


# -- processes -------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when this process dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> list[int]:
    """Every live process below `root` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    """Resident memory of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Proc:
    """A child process in a session of its own, logging to a file; `stop` ends its whole
    tree (a worker's pool or handler processes included)."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path,
                 env: dict[str, str] | None = None, death_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent(death_signal),
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        return [self.pid, *descendants(self.pid)] if self.alive() else []

    def rss_kib(self) -> int:
        """Resident memory of the process and everything below it."""
        return sum(rss_kib(pid) for pid in self.tree())

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the group, SIGKILL what is left after `grace_s`, including stray
        descendants that left the group (bystroq's handler processes have their own)."""
        stray = [(pid, _proc_stat(pid)) for pid in descendants(self.pid)] if self.alive() else []
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT_S)
        for pid, stat in stray:
            if stat is not None and _proc_stat(pid) == stat:  # the same process, not a reuse
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str,
             check: Callable[[], None] | None = None) -> None:
    """Poll until `predicate()`; `check()` may raise early (a worker died)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout_s:.0f}s")
        time.sleep(POLL_S)


# -- the systems -----------------------------------------------------------------------------


class System:
    """What a workload needs from a system: submit jobs, run workers, see jobs done."""

    label = ""
    # Can keep its workers from taking jobs while the queue fills (beanstalkd's pause-tube).
    holds = False

    def __init__(self, name: str, redis_url: str, log_dir: Path) -> None:
        self.name = name
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.workers: list[Proc] = []
        self.stop_grace_s = STOP_TIMEOUT_S

    def open(self) -> None: ...

    def submit(self, index: int, message: str, sleep_s: float) -> Any:
        raise NotImplementedError

    def key(self, index: int, handle: Any) -> Any:
        """What identifies a submitted job in what the system reports."""
        return index

    def worker_commands(self) -> list[list[str]]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str] | None:
        return None

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def wait_done(self, handles: Sequence[Any], timeout_s: float) -> None:
        raise NotImplementedError

    def spans(self, handles: Sequence[Any]) -> list[tuple[float, float]]:
        """(started, ended) unix times of each job, read after the run."""
        raise NotImplementedError

    def watcher(self) -> Watcher:
        raise NotImplementedError

    def start_workers(self) -> None:
        for i, command in enumerate(self.worker_commands()):
            self.workers.append(Proc(f"{self.name}-worker{i}", command, self.log_dir,
                                     env=self.worker_env()))

    def check_workers(self) -> None:
        for proc in self.workers:
            if not proc.alive():
                raise RuntimeError(f"worker {proc.name} exited ({proc.popen.returncode}):\n"
                                   f"{proc.tail()}")

    def stop_workers(self) -> None:
        """Stop every worker at once (SIGTERM, then SIGKILL after `stop_grace_s`)."""
        workers, self.workers = self.workers, []
        threads = [threading.Thread(target=proc.stop, args=(self.stop_grace_s,))
                   for proc in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def worker_rss_kib(self) -> int:
        return sum(proc.rss_kib() for proc in self.workers)

    def warm_up(self) -> None:
        """One job through the running workers: imports done, connections open."""
        handle = self.submit(-1, "", 0.0)
        self.wait_done([handle], WARMUP_TIMEOUT_S)

    def close(self) -> None:
        self.stop_workers()


class Beanstalk(System):
    """The bare greenstalk loop and bystroq's worker, on a beanstalkd of the run's own."""

    holds = True

    def __init__(self, name: str, redis_url: str, log_dir: Path) -> None:
        super().__init__(name, redis_url, log_dir)
        self.label = SYSTEMS[name]
        self.tube, self.events = "bench-echo", "bench-echo_events"
        self.server: Proc | None = None
        self.port = 0
        self._events_expected = 0
        self._clients: list[Any] = []

    def open(self) -> None:
        import greenstalk

        from bystroq import Producer
        from bystroq.testing import config_for, config_text

        binary = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
        self.port = free_port()
        self.server = Proc("beanstalkd", [binary, "-l", "127.0.0.1", "-p", str(self.port)],
                           self.log_dir, death_signal=signal.SIGKILL)
        wait_for(self._accepts, 10, "beanstalkd listening")
        address = f"127.0.0.1:{self.port}"
        self.config_path = self.log_dir / "beanstalk.yml"
        self.config_path.write_text(config_text([address], categories=("echo",), prefix="bench-"))
        self.admin = self._client(greenstalk.Client(("127.0.0.1", self.port), encoding=None))
        if self.name == "bare":
            self.putter = self._client(greenstalk.Client(
                ("127.0.0.1", self.port), encoding=None, use=self.tube))
        else:
            self.producer = Producer(config_for([address], categories=("echo",), prefix="bench-"))
            self._clients.append(self.producer)

    def _client(self, client: Any) -> Any:
        self._clients.append(client)
        return client

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def submit(self, index: int, message: str, sleep_s: float) -> Any:
        from bystroq.examples.echo import EchoJob
        from bystroq.messages import encode

        job = EchoJob(submissionID=index, message=message, sleep_s=sleep_s)
        if self.name == "bare":
            self.putter.put(encode(job))
        else:
            self.producer.submit("echo", job)
        self._events_expected += 2  # started and completed
        return index

    def worker_commands(self) -> list[list[str]]:
        if self.name == "bare":
            return [[sys.executable, str(Path(__file__).resolve()), "bare-worker",
                     f"127.0.0.1:{self.port}", self.tube, self.events]]
        listen = [sys.executable, "-m", "bystroq", "--config", str(self.config_path),
                  "--log-level", "warning", "listen", "--tube", "echo"]
        if self.name == "bystroq-process-1":
            listen += ["--isolation", "process"]
        if self.name == "bystroq-inline-1x8":
            listen += ["--concurrency", "8"]
        return [listen] * (2 if self.name == "bystroq-inline-2" else 1)

    def hold(self) -> None:
        self.admin.pause_tube(self.tube, 24 * 3600)

    def release(self) -> None:
        self.admin.pause_tube(self.tube, 0)

    def _events_put(self) -> int:
        import greenstalk

        try:
            return int(self.admin.stats_tube(self.events)["total-jobs"])
        except greenstalk.NotFoundError:
            return 0

    def wait_done(self, handles: Sequence[Any], timeout_s: float) -> None:
        expected = self._events_expected
        wait_for(lambda: self._events_put() >= expected, timeout_s,
                 f"{len(handles)} jobs done by {self.label}", self.check_workers)

    def warm_up(self) -> None:
        super().warm_up()
        self._drain_events()

    def _drain_events(self) -> list[dict[str, Any]]:
        return drain_events("127.0.0.1", self.port, self.events)

    def spans(self, handles: Sequence[Any]) -> list[tuple[float, float]]:
        started: dict[Any, float] = {}
        ended: dict[Any, float] = {}
        for event in self._drain_events():
            sid = event.get("submissionID")
            if event.get("event") == "started":
                started[sid] = min(event["at"], started.get(sid, math.inf))
            elif event.get("event") == "completed":
                ended[sid] = max(event["at"], ended.get(sid, 0.0))
        missing = [h for h in handles if h not in started or h not in ended]
        if missing:
            raise RuntimeError(f"{len(missing)} jobs have no started/completed event")
        return [(started[h], ended[h]) for h in handles]

    def watcher(self) -> Watcher:
        return EventsWatcher(("127.0.0.1", self.port), self.events)

    def close(self) -> None:
        super().close()
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        if self.server is not None:
            self.server.stop()


class RedisPeer(System):
    """A peer on Redis: its own database, flushed before and after; workers started from
    this environment with scripts/ on their import path."""

    result_ttl_note = ""

    def open(self) -> None:
        import redis

        os.environ["BENCH_REDIS_URL"] = self.redis_url
        if str(SCRIPTS) not in sys.path:
            sys.path.insert(0, str(SCRIPTS))
        self.redis = redis.Redis.from_url(self.redis_url)
        self.redis.flushdb()

    def worker_env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(SCRIPTS), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "BENCH_REDIS_URL": self.redis_url}

    def result_key(self, handle: Any) -> str:
        raise NotImplementedError

    def values(self, handles: Sequence[Any]) -> list[Any]:
        """Each job's return value ([started, ended, message]), read after the run."""
        raise NotImplementedError

    def wait_one(self, handle: Any, timeout_s: float) -> None:
        """Block until this job's result is stored (the peer's own way of waiting)."""
        raise NotImplementedError

    def wait_done(self, handles: Sequence[Any], timeout_s: float) -> None:
        keys = [self.result_key(h) for h in handles]
        what = f"{len(handles)} jobs done by {self.label}"
        deadline = time.monotonic() + timeout_s
        # The last job's result first (one key a poll), then all of them.
        wait_for(lambda: self.redis.exists(keys[-1]) == 1, timeout_s, what, self.check_workers)
        pending = keys
        while pending:
            present = self._present(pending)
            pending = [k for k, here in zip(pending, present, strict=True) if not here]
            if pending:
                self.check_workers()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: {len(pending)} not done within {timeout_s:.0f}s")
                time.sleep(0.1)

    def _present(self, keys: Sequence[str]) -> list[bool]:
        present: list[bool] = []
        for chunk in _chunks(keys, 2000):
            pipe = self.redis.pipeline(transaction=False)
            for key in chunk:
                pipe.exists(key)
            present += [bool(n) for n in pipe.execute()]
        return present

    def spans(self, handles: Sequence[Any]) -> list[tuple[float, float]]:
        values = self.values(handles)
        if any(v is None for v in values):
            raise RuntimeError(f"{sum(v is None for v in values)} results missing")
        return [(float(v[0]), float(v[1])) for v in values]

    def watcher(self) -> Watcher:
        return OrderedWatcher(self.wait_one)

    def close(self) -> None:
        super().close()
        if hasattr(self, "redis"):
            with contextlib.suppress(Exception):
                self.redis.flushdb()
                self.redis.close()


class Dramatiq(RedisPeer):
    label = SYSTEMS["dramatiq"]

    def open(self) -> None:
        super().open()
        import bench_tasks_dramatiq

        self.tasks = bench_tasks_dramatiq

    def submit(self, index: int, message: str, sleep_s: float) -> Any:
        return self.tasks.echo.send(index, message, sleep_s)

    def key(self, index: int, handle: Any) -> Any:
        return handle.message_id

    def worker_commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "dramatiq", "bench_tasks_dramatiq",
                 "--processes", "1", "--threads", "8"]]

    def result_key(self, handle: Any) -> str:
        return str(self.tasks.backend.build_message_key(handle))

    def values(self, handles: Sequence[Any]) -> list[Any]:
        raw = self._pipelined(lambda pipe, h: pipe.lindex(self.result_key(h), 0), handles)
        return [None if r is None else json.loads(r) for r in raw]

    def wait_one(self, handle: Any, timeout_s: float) -> None:
        self.tasks.backend.get_result(handle, block=True, timeout=int(timeout_s * 1000))

    def _pipelined(self, command: Callable[[Any, Any], Any], items: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for chunk in _chunks(items, 2000):
            pipe = self.redis.pipeline(transaction=False)
            for item in chunk:
                command(pipe, item)
            out += pipe.execute()
        return out

    def close(self) -> None:
        super().close()
        if hasattr(self, "tasks"):
            with contextlib.suppress(Exception):
                self.tasks.broker.close()


class Arq(RedisPeer):
    """arq: jobs enqueued through its asyncio pool, driven here by an event loop of our own;
    a job is done when its result key appears (arq's own wait polls every 0.5 s, too coarse
    for the latency workload, so this polls the key every millisecond)."""

    label = SYSTEMS["arq"]

    def open(self) -> None:
        super().open()
        import asyncio

        import bench_tasks_arq
        from arq import create_pool

        self.tasks = bench_tasks_arq
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(
            bench_tasks_arq.WorkerSettings.redis_settings,
            job_serializer=bench_tasks_arq.serialize,
            job_deserializer=bench_tasks_arq.deserialize,
            default_queue_name=bench_tasks_arq.QUEUE))

    def submit(self, index: int, message: str, sleep_s: float) -> Any:
        job = self.loop.run_until_complete(self.pool.enqueue_job("echo", index, message,
                                                                 sleep_s))
        if job is None:
            raise RuntimeError(f"arq refused job {index} (a job with its id exists)")
        return job.job_id

    def key(self, index: int, handle: Any) -> Any:
        return handle

    def worker_commands(self) -> list[list[str]]:
        arq = str(Path(sys.executable).parent / "arq")
        return [[arq, "bench_tasks_arq.WorkerSettings"]]

    def result_key(self, handle: Any) -> str:
        from arq.constants import result_key_prefix

        return f"{result_key_prefix}{handle}"

    def values(self, handles: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for chunk in _chunks(handles, 2000):
            pipe = self.redis.pipeline(transaction=False)
            for handle in chunk:
                pipe.get(self.result_key(handle))
            out += [None if raw is None else self.tasks.deserialize(raw)["r"]
                    for raw in pipe.execute()]
        return out

    def wait_one(self, handle: Any, timeout_s: float) -> None:
        key = self.result_key(handle)
        deadline = time.monotonic() + timeout_s
        while not self.redis.exists(key):
            if time.monotonic() > deadline:
                raise TimeoutError(f"arq job {handle} not done within {timeout_s:.0f}s")
            time.sleep(0.001)

    def close(self) -> None:
        super().close()
        if hasattr(self, "pool"):
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.pool.aclose())
                self.loop.close()


class RQ(RedisPeer):
    label = SYSTEMS["rq"]

    def open(self) -> None:
        super().open()
        from rq import Queue

        self.queue = Queue("bench", connection=self.redis)

    def submit(self, index: int, message: str, sleep_s: float) -> Any:
        return self.queue.enqueue("bench_tasks_rq.echo", index, message, sleep_s)

    def key(self, index: int, handle: Any) -> Any:
        return handle.id

    def worker_commands(self) -> list[list[str]]:
        rq = str(Path(sys.executable).parent / "rq")
        return [[rq, "worker", "--worker-class", "rq.worker.SimpleWorker", "--url",
                 self.redis_url, "--logging_level", "WARNING", "bench"]]

    def result_key(self, handle: Any) -> str:
        from rq.results import Result

        return str(Result.get_key(handle.id))

    def values(self, handles: Sequence[Any]) -> list[Any]:
        from rq.results import Result

        values: list[Any] = []
        for chunk in _chunks(handles, 2000):
            pipe = self.redis.pipeline(transaction=False)
            for job in chunk:
                pipe.xrevrange(self.result_key(job), "+", "-", count=1)
            for job, rows in zip(chunk, pipe.execute(), strict=True):
                if not rows:
                    values.append(None)
                    continue
                result_id, payload = rows[0]
                result = Result.restore(job.id, result_id.decode(), payload,
                                        connection=self.redis)
                values.append(result.return_value)
        return values

    def wait_one(self, handle: Any, timeout_s: float) -> None:
        handle.latest_result(timeout=max(1, math.ceil(timeout_s)))


class Celery(RedisPeer):
    def __init__(self, name: str, redis_url: str, log_dir: Path) -> None:
        super().__init__(name, redis_url, log_dir)
        self.label = SYSTEMS[name]

    def open(self) -> None:
        super().open()
        import bench_tasks_celery

        self.tasks = bench_tasks_celery

    def submit(self, index: int, message: str, sleep_s: float) -> Any:
        return self.tasks.echo.delay(index, message, sleep_s)

    def key(self, index: int, handle: Any) -> Any:
        return handle.id

    def worker_commands(self) -> list[list[str]]:
        celery = str(Path(sys.executable).parent / "celery")
        pool = (["--pool", "solo"] if self.name == "celery-solo"
                else ["--pool", "prefork", "--concurrency", "2"])
        return [[celery, "-A", "bench_tasks_celery", "worker", *pool, "--loglevel", "WARNING",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"]]

    def result_key(self, handle: Any) -> str:
        return f"celery-task-meta-{handle.id}"

    def values(self, handles: Sequence[Any]) -> list[Any]:
        values: list[Any] = []
        for chunk in _chunks(handles, 2000):
            for raw in self.redis.mget([self.result_key(h) for h in chunk]):
                values.append(None if raw is None else json.loads(raw)["result"])
        return values

    def watcher(self) -> Watcher:
        # Celery's Redis backend publishes each result on the channel named by its key.
        return PubSubWatcher(self.redis_url, "celery-task-meta-*", "celery-task-meta-")

    def close(self) -> None:
        super().close()
        if hasattr(self, "tasks"):
            with contextlib.suppress(Exception):
                self.tasks.app.close()


def make_system(name: str, redis_url: str, log_dir: Path) -> System:
    if name in ("bare", "bystroq-inline-1", "bystroq-inline-1x8", "bystroq-inline-2",
                "bystroq-process-1"):
        return Beanstalk(name, redis_url, log_dir)
    if name == "dramatiq":
        return Dramatiq(name, redis_url, log_dir)
    if name == "arq":
        return Arq(name, redis_url, log_dir)
    if name == "rq":
        return RQ(name, redis_url, log_dir)
    if name in ("celery-solo", "celery-prefork-2"):
        return Celery(name, redis_url, log_dir)
    raise SystemExit(f"unknown system {name!r}; expected one of: {', '.join(SYSTEMS)}")


def drain_events(host: str, port: int, tube: str) -> list[dict[str, Any]]:
    """Every event waiting on `tube`, decoded and deleted (pipelined, 1,000 a round trip)."""
    import msgspec

    from bystroq.servers import Connection, Server, delete_many, reserve_many

    conn = Connection(Server(host, port), watch=[tube])
    events: list[dict[str, Any]] = []
    try:
        while True:
            jobs = reserve_many(conn, 1000)
            if not jobs:
                return events
            events += [msgspec.json.decode(job.body) for job in jobs]
            delete_many(conn, [job.id for job in jobs])
    finally:
        conn.close()


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- seeing jobs complete, for latency ------------------------------------------------------


class Watcher:
    """A consumer thread that notes (perf_counter) when it sees each job completed."""

    def __init__(self) -> None:
        self.seen: dict[Any, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def expect(self, key: Any, handle: Any) -> None:
        """A job was just submitted."""

    def _run(self) -> None:
        try:
            self.watch()
        except BaseException as exc:
            self.error = exc

    def watch(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class EventsWatcher(Watcher):
    """Reads the events tube, as an events consumer does."""

    def __init__(self, address: tuple[str, int], tube: str) -> None:
        super().__init__()
        self.address, self.tube = address, tube

    def watch(self) -> None:
        import greenstalk
        import msgspec

        with greenstalk.Client(self.address, encoding=None, watch=self.tube) as client:
            while not self._stop.is_set():
                try:
                    job = client.reserve(1)
                except greenstalk.TimedOutError:
                    continue
                event = msgspec.json.decode(job.body)
                if event.get("event") == "completed":
                    self.seen[event["submissionID"]] = time.perf_counter()
                client.delete(job)


class PubSubWatcher(Watcher):
    """Subscribes to the channels a result backend publishes results on."""

    def __init__(self, redis_url: str, pattern: str, prefix: str) -> None:
        super().__init__()
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(pattern)  # before the first submit
        self.prefix = prefix

    def watch(self) -> None:
        try:
            while not self._stop.is_set():
                message = self.pubsub.get_message(timeout=1.0)
                if message is not None:
                    channel = message["channel"].decode()
                    self.seen[channel.removeprefix(self.prefix)] = time.perf_counter()
        finally:
            self.pubsub.close()
            self.client.close()


class OrderedWatcher(Watcher):
    """Waits for each job in submission order with the peer's own blocking call."""

    def __init__(self, wait_one: Callable[[Any, float], None]) -> None:
        super().__init__()
        self.wait_one = wait_one
        self.queue: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def expect(self, key: Any, handle: Any) -> None:
        self.queue.put((key, handle))

    def watch(self) -> None:
        while not self._stop.is_set():
            try:
                key, handle = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.wait_one(handle, 10.0)
            self.seen[key] = time.perf_counter()


# -- the workloads ---------------------------------------------------------------------------


def throughput(system: System, jobs: int, payload_bytes: int, sleep_s: float,
               timeout_s: float) -> dict[str, Any]:
    """Enqueue `jobs` (timed), then let the workers process them (timed from the first job
    started to the last one ended). Beanstalk systems warm their workers up and hold the tube
    while it fills; a peer's workers start once the queue is full."""
    message = "x" * payload_bytes
    if system.holds:
        system.start_workers()
        system.warm_up()
        system.hold()
    handles = []
    started = time.perf_counter()
    for i in range(jobs):
        handles.append(system.submit(i, message, sleep_s))
    enqueue_s = time.perf_counter() - started
    if system.holds:
        system.release()
    else:
        system.start_workers()
    system.wait_done(handles, timeout_s)
    system.stop_workers()
    spans = system.spans(handles)
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return {"jobs": jobs, "payload_bytes": payload_bytes, "sleep_s": sleep_s,
            "enqueue_s": enqueue_s, "enqueue_rate": jobs / enqueue_s,
            "process_s": last - first, "process_rate": jobs / (last - first)}


def latency(system: System, rate: float, seconds: float, timeout_s: float) -> dict[str, Any]:
    """Offer `rate` no-op jobs a second for `seconds` (open loop, on a fixed schedule); the
    latency of a job is from its submit call to its completion seen by a consumer."""
    system.start_workers()
    system.warm_up()
    watcher = system.watcher().start()
    jobs = round(rate * seconds)
    submitted: dict[Any, float] = {}
    try:
        begin = time.perf_counter() + 0.05
        for i in range(jobs):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            at = time.perf_counter()
            handle = system.submit(i, "", 0.0)
            key = system.key(i, handle)
            submitted[key] = at
            watcher.expect(key, handle)
        offered_s = time.perf_counter() - begin
        deadline = time.monotonic() + timeout_s
        while len(watcher.seen) < jobs and watcher.error is None:
            system.check_workers()
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
    finally:
        watcher.stop()
    if watcher.error is not None:
        raise RuntimeError(f"consumer failed: {watcher.error!r}")
    lat_ms = sorted((watcher.seen[k] - at) * 1000 for k, at in submitted.items()
                    if k in watcher.seen)
    if not lat_ms:
        raise RuntimeError("no job was seen completed")
    return {"jobs": jobs, "offered_rate": jobs / offered_s, "seen": len(lat_ms),
            "missing": jobs - len(lat_ms), "p50_ms": _quantile(lat_ms, 0.50),
            "p95_ms": _quantile(lat_ms, 0.95), "p99_ms": _quantile(lat_ms, 0.99),
            "max_ms": lat_ms[-1]}


def memory(system: System, checkpoints: Sequence[int], timeout_s: float) -> dict[str, Any]:
    """A worker's resident memory (its whole process tree) after each checkpoint's number of
    no-op jobs."""
    system.start_workers()
    system.warm_up()
    done = 0
    rss: dict[str, int] = {"0": system.worker_rss_kib()}
    for checkpoint in checkpoints:
        handles = [system.submit(i, "", 0.0) for i in range(done, checkpoint)]
        system.wait_done(handles, timeout_s)
        done = checkpoint
        time.sleep(0.5)  # let the last job's bookkeeping finish before reading memory
        rss[str(checkpoint)] = system.worker_rss_kib()
    first, last = str(checkpoints[0]), str(checkpoints[-1])
    return {"rss_kib": rss, "growth_kib": rss[last] - rss[first]}


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


# -- the bare worker loop (a subprocess of a run) --------------------------------------------


def bare_worker(address: str, tube: str, events: str) -> None:
    """reserve, put started, (sleep), put completed, delete: what any beanstalkd worker must
    do, with nothing around it. Runs until killed."""
    import greenstalk
    import msgspec

    from bystroq.examples.echo import EchoCompleted, EchoJob
    from bystroq.messages import SubmittedJobMessage, encode

    host, port = address.rsplit(":", 1)
    decoder = msgspec.json.Decoder(EchoJob)
    with greenstalk.Client((host, int(port)), encoding=None, watch=tube, use=events) as client:
        while True:
            try:
                job = client.reserve(1)
            except greenstalk.TimedOutError:
                continue
            data = decoder.decode(job.body)
            client.put(encode(SubmittedJobMessage(submissionID=data.submissionID,
                                                  at=time.time())))
            if data.sleep_s:
                time.sleep(data.sleep_s)
            client.put(encode(EchoCompleted(submissionID=data.submissionID,
                                            message=data.message, at=time.time())))
            client.delete(job)


# -- command line ----------------------------------------------------------------------------


class _Stop(BaseException):
    """SIGTERM or the run's time limit: unwind through the finally blocks."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="bystroq-bench-"))
    system = make_system(args.system, args.redis_url, log_dir)
    system.stop_grace_s = args.stop_grace
    result: dict[str, Any] = {"system": args.system, "label": system.label,
                              "workload": args.workload}
    keep_logs = False
    try:
        system.open()
        if args.workload == "throughput":
            result.update(throughput(system, args.jobs, args.payload_bytes,
                                     args.sleep_ms / 1000, args.timeout))
        elif args.workload == "latency":
            result.update(latency(system, args.rate, args.seconds, args.timeout))
        else:
            checkpoints = [int(n) for n in args.checkpoints.split(",")]
            result.update(memory(system, checkpoints, args.timeout))
    except (Exception, _Stop, KeyboardInterrupt) as exc:
        keep_logs = True
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["logs"] = str(log_dir)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        system.close()
        if not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="one system, one workload, one run; prints JSON")
    one.add_argument("system", choices=list(SYSTEMS))
    one.add_argument("workload", choices=WORKLOADS)
    one.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    one.add_argument("--jobs", type=int, default=1000)
    one.add_argument("--payload-bytes", type=int, default=0)
    one.add_argument("--sleep-ms", type=float, default=0.0)
    one.add_argument("--rate", type=float, default=200.0)
    one.add_argument("--seconds", type=float, default=10.0)
    one.add_argument("--checkpoints", default="10000,100000")
    one.add_argument("--timeout", type=float, default=300.0,
                     help="seconds to wait for the jobs to be done")
    one.add_argument("--stop-grace", type=float, default=STOP_TIMEOUT_S,
                     help="seconds workers get to stop after SIGTERM before SIGKILL")
    one.add_argument("--time-limit", type=int, default=1200,
                     help="seconds the whole run may take before it stops itself")
    bare = sub.add_parser("bare-worker", help="the bare greenstalk loop (used by a run)")
    bare.add_argument("address")
    bare.add_argument("tube")
    bare.add_argument("events")
    args = parser.parse_args(argv)
    if args.command == "bare-worker":
        bare_worker(args.address, args.tube, args.events)
        return
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(args.time_limit)
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
