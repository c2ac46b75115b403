"""Keeping reservations alive: touch held jobs (running, or reserved ahead and waiting their
turn) on a timer; stop a handler whose lease is lost or whose time limit passed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import greenstalk
import structlog

from bystroq.errors import JobTimeout, LeaseLost
from bystroq.servers import CONNECTION_ERRORS, Reserved


def touch_interval_s(ttr: int) -> float:
    """Touch well before the TTR runs out (beanstalkd warns 1 s before it does)."""
    return max(0.1, min(ttr / 3, ttr - 1.0))


def _not_running(reason: BaseException) -> None:
    """A lease's stop while its job waits its turn: the slot finds `stopped` when it gets
    to the job and acts on it (a cancel, a lost lease, a shutdown) without running it."""


@dataclass(eq=False)
class Lease:
    """One held job's reservation, and how to stop its handler once it runs."""

    job: Reserved
    ttr: int
    stop: Callable[[BaseException], None] = _not_running
    attempt: int = 1
    # False while the job waits its turn in its slot: no time limit runs yet.
    running: bool = False
    timeout_s: float | None = None
    touched_at: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.monotonic)
    stopped: BaseException | None = None
    # Set (under the connection's lock) once the worker reports the job: no more touches.
    done: bool = False

    def fresh(self) -> bool:
        """True while the server certainly still holds the job for us: the reserving
        connection is still open and less than half the TTR passed since the last touch
        (or, before the first, since the reserve command was written)."""
        return (self.job.held and not isinstance(self.stopped, LeaseLost)
                and time.monotonic() - self.touched_at < self.ttr / 2)

    def confirm(self) -> bool:
        """True if the job is ours now: fresh, or a touch just said so. Called under the
        connection's lock right before every event is written, so a worker that was paused
        past the TTR (GC, VM steal, SIGSTOP) does not report a job another worker holds;
        the `touch_command` written in front of the event covers a write delayed later."""
        return self.fresh() or self.touch(final=True)

    def touch_command(self) -> bytes:
        """`touch` for this job, written in front of each of its events: the server answers
        it just before it stores the event, so the answer says whether the event was put
        by the job's holder, however late the write arrived (a silent network)."""
        return b"touch %d\r\n" % self.job.id

    def touched(self, status: bytes, sent_at: float) -> bool:
        """Take the answer to `touch_command` (written at `sent_at`): False, and the lease
        stopped, when the job was no longer ours as its event was stored."""
        if status == b"TOUCHED":
            self.touched_at = max(self.touched_at, sent_at)
            return True
        self.halt(LeaseLost(f"job {self.job.id} was no longer reserved by this worker when "
                            f"its event arrived"))
        return False

    def touch(self, final: bool = False) -> bool:
        """Refresh the TTR; False (and the lease stopped) when the job is no longer ours.

        The keeper's touches stop once the lease is `done`; the worker's `final` one, made
        just before it reports, does not.
        """
        conn = self.job.conn
        with conn.lock:
            if self.done and not final:
                return True
            if not self.job.held:
                self.halt(LeaseLost(f"connection to {conn.server} was lost while job "
                                    f"{self.job.id} ran"))
                return False
            at = time.monotonic()
            try:
                conn.client.touch(greenstalk.Job(self.job.id, b""))
            except greenstalk.NotFoundError:
                self.halt(LeaseLost(f"job {self.job.id} is no longer reserved by this worker"))
                return False
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)
                self.halt(LeaseLost(f"connection to {conn.server} lost: {exc}"))
                return False
        self.touched_at = at
        return True

    def halt(self, reason: BaseException) -> None:
        """Stop the handler for `reason` (first reason wins)."""
        if self.stopped is None:
            self.stopped = reason
            self.stop(reason)


class LeaseKeeper:
    """A thread that touches every running job on time and enforces time limits."""

    def __init__(self, tick_s: float = 0.1, touch_interval_s: float | None = None) -> None:
        self.tick_s = tick_s
        self.touch_interval_s = touch_interval_s
        # Called every tick (a slot sends what its connections hold back while a handler
        # runs, and reads what its other servers answered).
        self.tending: list[Callable[[], None]] = []
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.log = structlog.get_logger("bystroq.lease")

    def add(self, lease: Lease) -> None:
        # No wake-up: the keeper looks every tick, and waking it for each short job costs
        # the job's thread a GIL hand-over.
        with self._lock:
            self._leases.add(lease)
        if self._thread is None:
            self._start()

    def start(self) -> None:
        """Start ticking now (a worker's run does, so its slots are tended from the start)."""
        if self._thread is None:
            self._start()

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def leases(self) -> list[Lease]:
        with self._lock:
            return list(self._leases)

    def halt_all(self, reason: BaseException) -> None:
        for lease in self.leases():
            lease.halt(reason)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bystroq-lease-keeper", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            leases = self.leases()
            now = time.monotonic()
            for lease in leases:
                if lease.stopped is not None or lease.done:
                    continue
                if (lease.running and lease.timeout_s is not None
                        and now - lease.started_at > lease.timeout_s):
                    lease.halt(JobTimeout(f"handler ran past its timeout of {lease.timeout_s}s"))
                elif now - lease.touched_at >= (
                    self.touch_interval_s or touch_interval_s(lease.ttr)
                ):
                    lease.touch()
            for tend in list(self.tending):
                try:
                    tend()
                except Exception:
                    self.log.exception("tending a slot's connections failed")
            self._wake.wait(self.tick_s)  # set only by close()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
