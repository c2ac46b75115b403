"""The worker: slots that reserve jobs, run them through the listener, report events.

`Worker.step()` handles one job in the calling thread (tests need no threads or sleeps);
`Worker.run()` runs `concurrency` slots until stopped, the queue is empty (`burst`), or
`max_jobs` jobs were taken; meanwhile it beats on its heartbeat tube
(bystroq.worker.heartbeat) and obeys its control tube (cancel, quiet, stop).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import structlog

from bystroq.config import LoadedConfig
from bystroq.control import QuietRequest, WorkerRequest, WorkerState, heartbeat_tube
from bystroq.errors import (
    ShuttingDown,
)
from bystroq.listener import (
    Listener,
    check_importable,
    load_listener,
)
from bystroq.messages import JobDecoder
from bystroq.servers import (
    Server,
    ServerHealth,
    servers_of,
)
from bystroq.worker.control import ControlListener
from bystroq.worker.heartbeat import DEFAULT_INTERVAL_S, HeartbeatSender, heartbeat_of
from bystroq.worker.lease import Lease, LeaseKeeper
from bystroq.worker.observe import NoObserver, WorkerObserver
from bystroq.worker.outcome import Outcome
from bystroq.worker.policy import RetryPolicy
from bystroq.worker.runners import Runner
from bystroq.worker.slot import Slot
from bystroq.worker.summary import Summary


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs (the CLI's flags; the category's config gives the defaults)."""

    concurrency: int | None = None
    isolation: str | None = None
    burst: bool = False
    max_jobs: int | None = None
    reserve_timeout_s: int = 1
    drain_timeout_s: float = 30.0
    worker_id: str | None = None
    # Overrides the touch timer derived from each job's TTR (tests use it to lose a lease).
    touch_interval_s: float | None = None
    # Makes each slot's runner in place of `isolation`'s (bystroq.bystro forks a child
    # per job with it).
    runner_factory: Callable[[Listener], Runner] | None = None
    # Told of every job's reserve, run and outcome (bystroq.metrics.worker counts them).
    observer: WorkerObserver | None = None
    # Seconds between heartbeats (None: no heartbeats; the worker is not listed live).
    heartbeat_interval_s: float | None = DEFAULT_INTERVAL_S


def default_worker_id(suffix: str = "") -> str:
    """`host.pid` (then `.suffix`), restricted to the characters a tube name allows."""
    host = re.sub(r"[^A-Za-z0-9+;.$_()-]", "-", socket.gethostname())[:150]
    tail = "." + re.sub(r"[^A-Za-z0-9+;.$_()-]", "-", suffix)[:30] if suffix else ""
    return f"{host}.{os.getpid()}{tail}"


class Worker:
    """Runs one category's jobs."""

    def __init__(
        self,
        config: LoadedConfig,
        category: str,
        listener: Listener | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        self.conf = config.category(category)
        self.category = config.category_name(category)
        self.listener = listener or load_listener(config.listener_module(category))
        self.servers = servers_of(config.addresses)
        self.policy = RetryPolicy.of(self.conf)
        self.decoder = JobDecoder(self.listener.job_data_type, strict=self.conf.strict)
        self.wire = config.config.wire
        self.worker_id = self.options.worker_id or default_worker_id()
        self.concurrency = self.options.concurrency or self.conf.concurrency
        self.isolation = self.options.isolation or self.conf.isolation
        if self.isolation == "process":
            check_importable(self.listener)
        self.keeper = LeaseKeeper(touch_interval_s=self.options.touch_interval_s)
        self.health = ServerHealth()  # one log line per server going down or coming back
        self.counts: Counter[Outcome] = Counter()
        self.observer: WorkerObserver = self.options.observer or NoObserver()
        self.log = structlog.get_logger("bystroq.worker").bind(
            tube=self.conf.submission, worker=self.worker_id
        )
        self._slots: list[Slot] = []
        self._claimed = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._quiet = False  # no more reserving (under _lock, with _reserving)
        self._reserving = 0  # slots inside `reserve` now
        self._heartbeat: HeartbeatSender | None = None
        self._started_at = time.time()
        self._drain_deadline: float | None = None
        self._signals: list[int] = []  # appended by the signal handler only
        self._signals_seen = 0
        self._crashed = False

    # -- one job at a time, in the caller's thread -------------------------------------

    def step(self, wait_s: float = 0) -> Outcome:
        """Reserve one job (waiting up to `wait_s`), handle it and settle what it sent."""
        slot = self._slot(0)
        asked = time.monotonic()
        job = slot.reserve(wait_s, most=1)
        self.observer.reserve_waited(time.monotonic() - asked, job is not None)
        if job is None:
            self.count(Outcome.NONE)
            return Outcome.NONE
        try:
            outcome = slot.process(job)
        finally:
            self.observer.job_left()
        slot.flush()
        return job.outcome or outcome

    # -- the long-running loop ---------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (SIGTERM/SIGINT, `stop()`), empty in burst mode, or max_jobs.

        Returns 0, or 1 if a slot stopped on an unexpected error.
        """
        restore = self._install_signals()
        self.keeper.start()  # it also sends what slots hold back while a handler runs
        control = ControlListener(self.servers, self.worker_id, self.cancel,
                                  self.health, self._on_request).start()
        self._heartbeat = self._start_heartbeat()
        self.log.info("worker started", concurrency=self.concurrency, isolation=self.isolation,
                      servers=[s.name for s in self.servers])
        summary = Summary(self.log, self.counts)
        threads = [
            threading.Thread(target=self._slot_loop, args=(self._slot(i),),
                             name=f"bystroq-slot-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.1)
                self._on_signals()
                deadline = self._drain_deadline
                if deadline is not None and time.monotonic() > deadline:
                    self.keeper.halt_all(ShuttingDown("drain timeout passed"))
                with self._lock:
                    summary.tick()
        finally:
            restore()
            control.close()
            self.close()
            self._stop_heartbeat()
        done = {k.value: v for k, v in self.counts.items() if v}
        self.log.info("worker stopped", **done, **summary.overall())
        return 1 if self._crashed else 0

    def cancel(self, server: Server, queue_id: int, reason: BaseException) -> bool:
        """Stop the handler of job `queue_id` from `server`, if this worker runs it."""
        for lease in self.keeper.leases():
            if lease.job.id == queue_id and lease.job.server == server:
                lease.halt(reason)
                return True
        return False

    def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop reserving; running jobs get `drain_timeout_s` to finish, then are released."""
        timeout = self.options.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._drain_deadline is None or deadline < self._drain_deadline:
            self._drain_deadline = deadline
        if self._heartbeat is not None:
            self._heartbeat.beat_now()

    def quiet(self) -> None:
        """Stop reserving for good; running jobs finish; the worker stays (state `quiet`
        once no slot is still waiting for a job)."""
        with self._lock:
            self._quiet = True
        if self._heartbeat is not None:
            self._heartbeat.beat_now()

    @property
    def state(self) -> WorkerState:
        """What the heartbeat says: `quiet` only once no slot can take another job."""
        if self._stopping.is_set():
            return "stopping"
        with self._lock:
            return "quiet" if self._quiet and not self._reserving else "running"

    def _on_request(self, request: WorkerRequest) -> None:
        """A quiet or stop request from the control tube."""
        if isinstance(request, QuietRequest):
            self.log.info("quiet: no more jobs taken; running jobs finish",
                          reason=request.reason, running=len(self.running()))
            self.quiet()
        else:
            self.log.info("stopping: finishing running jobs", reason=request.reason,
                          drain_timeout_s=self.options.drain_timeout_s,
                          running=len(self.running()))
            self.stop()

    def _start_heartbeat(self) -> HeartbeatSender | None:
        interval = self.options.heartbeat_interval_s
        if not interval:
            return None
        self._started_at = time.time()
        sender = HeartbeatSender(self.servers, heartbeat_tube(self.conf.submission), interval,
                                 lambda: heartbeat_of(self, self.state, interval,
                                                      self._started_at), self.health)
        return sender.start()

    def _stop_heartbeat(self) -> None:
        sender, self._heartbeat = self._heartbeat, None
        if sender is not None:
            sender.close(last=heartbeat_of(self, "stopped", sender.interval_s,
                                           self._started_at))

    def _install_signals(self) -> Callable[[], None]:
        """SIGTERM/SIGINT only count (a handler must not log or take locks); the main loop
        acts on them in `_on_signals`."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signals(self) -> None:
        while self._signals_seen < len(self._signals):
            name = signal.Signals(self._signals[self._signals_seen]).name
            self._signals_seen += 1
            if self._signals_seen == 1:
                self.log.info("stopping: finishing running jobs", signal=name,
                              drain_timeout_s=self.options.drain_timeout_s,
                              running=len(self.running()))
                self.stop()
            else:
                self.log.warning("second signal: stopping now, releasing running jobs",
                                 signal=name)
                self.stop(drain_timeout_s=0)
                self.keeper.halt_all(ShuttingDown(f"worker stopped by a second {name}"))

    def _slot_loop(self, slot: Slot) -> None:
        try:
            while not self._stopping.is_set():
                if not self._begin_reserve(slot):
                    if self._quiet and not self.options.burst:
                        slot.flush()  # held jobs go back, what is owed goes now
                        self._stopping.wait(0.1)  # quiet until stopped
                        continue
                    return
                try:
                    wait_s = 0 if self.options.burst else self.options.reserve_timeout_s
                    asked = time.monotonic()
                    job = slot.reserve(wait_s)
                    self.observer.reserve_waited(time.monotonic() - asked, job is not None)
                except Exception:
                    self.log.exception("slot stopped on an unexpected error while reserving; "
                                       "its connections are closed so its jobs go back")
                    slot.drop_connections()
                    self._crashed = True
                    return
                finally:
                    self._end_reserve()
                if job is None:
                    if self.options.burst:
                        return
                    continue
                try:
                    slot.process(job)
                except Exception:
                    # A bug, not a job's failure: drop the connection so that the server
                    # gives the job out again, and stop this slot loudly.
                    self.log.exception("slot stopped on an unexpected error; the job goes "
                                       "back to the server", queueID=job.id)
                    job.conn.failed(RuntimeError("slot error"))
                    self._crashed = True
                    return
                finally:
                    self.observer.job_left()
        finally:
            slot.flush()

    def count(self, outcome: Outcome) -> None:
        """One job's outcome (a slot counts each job once, when its outcome is known: for a
        completed job, once its completed event is stored); the observer hears of it too."""
        with self._lock:
            self.counts[outcome] += 1
        if outcome is not Outcome.NONE:
            self.observer.finished(outcome)

    def claimable(self, wanted: int) -> int:
        """How many of `wanted` jobs may still be taken (none once quiet; `max_jobs`)."""
        with self._lock:
            if self._quiet:
                return 0
            if self.options.max_jobs is None:
                return wanted
            return max(0, min(wanted, self.options.max_jobs - self._claimed))

    def _begin_reserve(self, slot: Slot) -> bool:
        """Whether `slot` may take a job (one held ahead, or one more under `max_jobs`);
        it counts as reserving until `_end_reserve`."""
        with self._lock:
            if self._quiet or not (slot.intake.ahead or self.options.max_jobs is None
                                   or self._claimed < self.options.max_jobs):
                return False
            self._reserving += 1
            return True

    def _end_reserve(self) -> None:
        with self._lock:
            self._reserving -= 1

    def claim(self) -> bool:
        """Take one job that came, unless quiet or `max_jobs` were taken (jobs held ahead
        count, until given back)."""
        with self._lock:
            if self._quiet or (self.options.max_jobs is not None
                               and self._claimed >= self.options.max_jobs):
                return False  # one that came all the same is given back
            self._claimed += 1
            return True

    def unclaim(self) -> None:
        """A job claimed was given back unrun, or never came."""
        with self._lock:
            self._claimed -= 1

    def running(self) -> list[Lease]:
        """The leases of the jobs whose handlers run now (not those held ahead)."""
        return [lease for lease in self.keeper.leases() if lease.running and not lease.done]

    def _slot(self, index: int) -> Slot:
        while len(self._slots) <= index:
            self._slots.append(Slot(self, len(self._slots)))
        return self._slots[index]

    @property
    def stopping(self) -> bool:
        """Whether a slot should stop waiting for a job (stopping, or quiet)."""
        return self._stopping.is_set() or self._quiet

    def close(self) -> None:
        """Release what the worker holds: child processes, connections, the keeper."""
        self.keeper.close()
        for slot in self._slots:
            slot.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
