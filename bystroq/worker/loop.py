"""The worker: slots that reserve jobs, run them through the listener, report events.

`Worker.step()` handles one job in the calling thread (tests need no threads or sleeps);
`Worker.run()` runs `concurrency` slots until stopped, the queue is empty (`burst`), or
`max_jobs` jobs were taken.
"""

from __future__ import annotations

import enum
import logging
import math
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
from typing import Any

import greenstalk
import msgspec
import structlog

from bystroq.config import LoadedConfig
from bystroq.errors import (
    Cancelled,
    DecodeError,
    HandlerDied,
    HandlerError,
    JobTimeout,
    JobTooBig,
    LeaseLost,
    ShuttingDown,
)
from bystroq.listener import (
    Listener,
    check_importable,
    default_failed_msg_fn,
    describe,
    load_listener,
)
from bystroq.messages import (
    CancelledJobMessage,
    Event,
    FailedJobMessage,
    InvalidJobMessage,
    JobDecoder,
    ProgressMessage,
    RetryingJobMessage,
    encode,
    stamp,
    submission_id_of,
)
from bystroq.progress import ProgressPublisher
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    Reply,
    Reserved,
    Server,
    ServerHealth,
    connections,
    delete_then_reserve,
    exchange,
    expect,
    job_reserves_ttr_pri,
    put_command,
    read_reply,
    reserved_job,
    send,
    servers_of,
)
from bystroq.worker.control import ControlListener
from bystroq.worker.decide import Decision, Disposition, Verdict, decide
from bystroq.worker.execute import Execution
from bystroq.worker.lease import Lease, LeaseKeeper
from bystroq.worker.policy import RetryPolicy, exception_names
from bystroq.worker.runners import InlineRunner, ProcessRunner, Runner

# How long a failed report waits before the job is offered again.
REPORT_RETRY_DELAY_S = 5
# How often a running worker logs its rate and outcomes at info (one line a job is debug).
SUMMARY_INTERVAL_S = 10.0
MULTI_SERVER_POLL_MAX_S = 0.1


class Outcome(str, enum.Enum):
    """What one step did."""

    NONE = "none"  # no job was reserved
    COMPLETED = "completed"
    FAILED = "failed"
    INVALID = "invalid"
    GAVE_UP = "gave_up"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    RELEASED = "released"  # shutdown, or an event could not be stored
    LOST = "lost"  # the reservation was lost; nothing reported


@dataclass
class Taken(Reserved):
    """A job a slot reserved, and when it asked for it: a lease's age counts from before
    the reserve command was written (the server's TTR clock starts later, never earlier)."""

    asked_at: float = 0.0


@dataclass(frozen=True)
class Deferred:
    """A completed job whose event is still to be put (with the slot's next command)."""

    lease: Lease
    body: bytes
    log: Any

    @property
    def job(self) -> Reserved:
        return self.lease.job


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


def default_worker_id() -> str:
    """`host.pid`, restricted to the characters a tube name allows."""
    host = re.sub(r"[^A-Za-z0-9+;.$_()-]", "-", socket.gethostname())[:150]
    return f"{host}.{os.getpid()}"


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
        self.log = structlog.get_logger("bystroq.worker").bind(
            tube=self.conf.submission, worker=self.worker_id
        )
        self._slots: list[Slot] = []
        self._claimed = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._drain_deadline: float | None = None
        self._signals: list[int] = []  # appended by the signal handler only
        self._signals_seen = 0
        self._crashed = False

    # -- one job at a time, in the caller's thread -------------------------------------

    def step(self, wait_s: float = 0) -> Outcome:
        """Reserve one job (waiting up to `wait_s`) and handle it."""
        slot = self._slot(0)
        job = slot.reserve(wait_s)
        outcome = slot.process(job) if job is not None else Outcome.NONE
        self.counts[outcome] += 1
        return slot.flush() or outcome

    # -- the long-running loop ---------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (SIGTERM/SIGINT, `stop()`), empty in burst mode, or max_jobs.

        Returns 0, or 1 if a slot stopped on an unexpected error.
        """
        restore = self._install_signals()
        control = ControlListener(self.servers, self.worker_id, self.cancel,
                                  self.health).start()
        self.log.info("worker started", concurrency=self.concurrency, isolation=self.isolation,
                      servers=[s.name for s in self.servers])
        summary = _Summary(self.log, self.counts)
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
                              running=len(self.keeper.leases()))
                self.stop()
            else:
                self.log.warning("second signal: stopping now, releasing running jobs",
                                 signal=name)
                self.stop(drain_timeout_s=0)
                self.keeper.halt_all(ShuttingDown(f"worker stopped by a second {name}"))

    def _slot_loop(self, slot: Slot) -> None:
        try:
            while not self._stopping.is_set():
                if not self._claim():
                    return
                try:
                    wait_s = 0 if self.options.burst else self.options.reserve_timeout_s
                    job = slot.reserve(wait_s)
                except Exception:
                    self._unclaim()
                    self.log.exception("slot stopped on an unexpected error while reserving; "
                                       "its connections are closed so its jobs go back")
                    slot.drop_connections()
                    self._crashed = True
                    return
                except BaseException:
                    self._unclaim()
                    raise
                if job is None:
                    self._unclaim()
                    if self.options.burst:
                        return
                    continue
                try:
                    outcome = slot.process(job)
                except Exception:
                    # A bug, not a job's failure: drop the connection so that the server
                    # gives the job out again, and stop this slot loudly.
                    self.log.exception("slot stopped on an unexpected error; the job goes "
                                       "back to the server", queueID=job.id)
                    job.conn.failed(RuntimeError("slot error"))
                    self._crashed = True
                    return
                with self._lock:
                    self.counts[outcome] += 1
        finally:
            slot.flush()

    def recount(self, counted: Outcome, actual: Outcome) -> None:
        """A job counted as `counted` turned out `actual` (its deferred event failed)."""
        with self._lock:
            self.counts[counted] -= 1
            self.counts[actual] += 1

    def _claim(self) -> bool:
        with self._lock:
            if self.options.max_jobs is not None and self._claimed >= self.options.max_jobs:
                return False
            self._claimed += 1
            return True

    def _unclaim(self) -> None:
        with self._lock:
            self._claimed -= 1

    def _slot(self, index: int) -> Slot:
        while len(self._slots) <= index:
            self._slots.append(Slot(self, len(self._slots)))
        return self._slots[index]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def close(self) -> None:
        """Release what the worker holds: child processes, connections, the keeper."""
        self.keeper.close()
        for slot in self._slots:
            slot.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Slot:
    """One job at a time: its own connection per server (jobs are bound to the connection
    that reserved them) and its own runner."""

    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.conns = connections(
            worker.servers, use=worker.conf.events, watch=[worker.conf.submission],
            health=worker.health,
        )
        factory = worker.options.runner_factory
        self.runner: Runner = (
            factory(worker.listener) if factory is not None
            else ProcessRunner(worker.listener) if worker.isolation == "process"
            else InlineRunner(worker.listener)
        )
        self._next = 0
        # A completed job whose event is not yet put: it goes with the next reserve.
        self._deferred: Deferred | None = None
        # A job whose completed event is stored: its delete goes with the next command.
        self._pending_delete: Reserved | None = None
        # Started events the server stored after their job was lost: to be deleted.
        self._strays: list[tuple[Connection, int]] = []

    # -- reserving ---------------------------------------------------------------------

    def reserve(self, wait_s: float) -> Taken | None:
        """The next job from any server, waiting up to `wait_s` (0: only what is ready)."""
        self._retract_strays()
        deadline = time.monotonic() + wait_s
        single = len(self.conns) == 1
        pause = 0.005
        while True:
            for i in range(len(self.conns)):
                conn = self.conns[(self._next + i) % len(self.conns)]
                if not conn.ready():
                    continue
                timeout = math.ceil(max(0.0, deadline - time.monotonic())) if single else 0
                with conn.lock:
                    asked_at = time.monotonic()
                    try:
                        job = self._reserve_on(conn, timeout)
                    except CONNECTION_ERRORS as exc:
                        conn.failed(exc)
                        continue
                    if job is None:
                        continue
                self._next = (self._next + i + 1) % len(self.conns)
                return Taken(job.id, job.body, conn, conn.generation, asked_at=asked_at)
            now = time.monotonic()
            if now >= deadline or self.worker.stopping:
                return None
            if single and self.conns[0].ready():
                continue
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, MULTI_SERVER_POLL_MAX_S)

    def _reserve_on(self, conn: Connection, timeout: int) -> greenstalk.Job[bytes] | None:
        """Reserve over `conn`; what is owed on it (a completed event, a delete) rides along.

        A deferred completed event is put together with `reserve-with-timeout 0`; the
        delete waits until the event's reply says it is stored. Only when no job is ready
        does the slot wait, with the delete sent in the same write as the waiting reserve.
        """
        deferred = self._deferred
        if deferred is not None and deferred.job.conn is conn:
            self._deferred = None
        if deferred is not None and deferred.job.conn is conn and self._still_ours(deferred):
            sent_at = time.monotonic()
            try:
                send(conn, [deferred.lease.touch_command(), put_command(deferred.body),
                            b"reserve-with-timeout 0\r\n"])
                touch, put = read_reply(conn), read_reply(conn)
            except CONNECTION_ERRORS:
                self.worker.recount(Outcome.COMPLETED, Outcome.LOST)  # it runs again
                raise
            try:
                reserve = read_reply(conn)
            except CONNECTION_ERRORS:
                if put[0] == b"INSERTED":  # stored: the delete is still owed (a new
                    self._completed_put(deferred, touch, put, sent_at)  # connection can)
                else:
                    self.worker.recount(Outcome.COMPLETED, Outcome.LOST)
                raise
            # All replies read: a release or a retraction may follow.
            self._completed_put(deferred, touch, put, sent_at)
            job = reserved_job(reserve)
            if job is not None:
                return job
        elif deferred is not None and deferred.job.conn is not conn:
            self._flush_deferred()
        pending, self._pending_delete = self._pending_delete, None
        if pending is not None and pending.conn is conn:
            deleted, job = delete_then_reserve(conn, pending.id, timeout)
            if not deleted:
                self._delete_missed(pending)
            return job
        if pending is not None:
            with pending.conn.lock:
                self._job_command(pending, Disposition.DELETE, self.worker.log)
        (reply,) = exchange(conn, [b"reserve-with-timeout %d\r\n" % timeout])
        return reserved_job(reply)

    def _completed_put(self, deferred: Deferred, touch: Reply, reply: Reply,
                       sent_at: float) -> Outcome:
        """The replies to the deferred completed event and the touch before it: stored by
        the holder, so the delete is owed; refused, so the job is released to be tried later
        (the outcome counted becomes RELEASED); stored after the job was lost, so deleted."""
        job, log = deferred.job, deferred.log
        if not deferred.lease.touched(touch[0], sent_at):
            self._retract(job.conn, reply, log, "completed")
            self.worker.recount(Outcome.COMPLETED, Outcome.LOST)
            return Outcome.LOST
        if reply[0] == b"INSERTED":
            self._pending_delete = job
            log.debug("job completed",
                     duration_s=round(time.monotonic() - deferred.lease.started_at, 6))
            return Outcome.COMPLETED
        log.error("event not stored: job released for later", error=reply[0].decode(),
                  delay_s=REPORT_RETRY_DELAY_S)
        self._job_command(job, Disposition.RELEASE, log, REPORT_RETRY_DELAY_S)
        self.worker.recount(Outcome.COMPLETED, Outcome.RELEASED)
        return Outcome.RELEASED

    def _flush_deferred(self) -> Outcome | None:
        """Put a deferred completed event on its own (its connection is not the next one)."""
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            return None
        conn = deferred.job.conn
        with conn.lock:
            if not self._still_ours(deferred):
                return Outcome.LOST
            sent_at = time.monotonic()
            try:
                touch, reply = exchange(conn, [deferred.lease.touch_command(),
                                               put_command(deferred.body)])
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)  # the server releases the job when the connection closes
                deferred.log.warning("event not stored: connection lost", error=str(exc))
                self.worker.recount(Outcome.COMPLETED, Outcome.LOST)
                return Outcome.LOST
            return self._completed_put(deferred, touch, reply, sent_at)

    def flush(self) -> Outcome | None:
        """Put a deferred completed event and send the delete still owed; returns the
        deferred job's outcome if it changed (the event could not be stored)."""
        changed = self._flush_deferred()
        self._retract_strays()
        pending, self._pending_delete = self._pending_delete, None
        if pending is not None:
            with pending.conn.lock:
                self._job_command(pending, Disposition.DELETE, self.worker.log)
        return changed if changed is not Outcome.COMPLETED else None

    def _delete_missed(self, job: Reserved) -> None:
        self.worker.log.warning("delete after the event: job no longer ours", queueID=job.id)

    # -- handling one job --------------------------------------------------------------

    def process(self, job: Taken) -> Outcome:
        """Validate, run and report one reserved job."""
        worker, conn = self.worker, job.conn
        pending = self._pending_delete
        if pending is not None and pending.conn is not conn:
            pending = None  # it goes with the next command on its own connection
        try:
            with conn.lock:
                self._pending_delete = None if pending is not None else self._pending_delete
                attempt, ttr, job.priority, deleted = job_reserves_ttr_pri(
                    conn, job.id, delete_first=pending.id if pending is not None else None)
            if pending is not None and not deleted:
                self._delete_missed(pending)
        except greenstalk.NotFoundError:
            return Outcome.LOST
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)
            return Outcome.LOST
        fields: dict[str, Any] = {"queueID": job.id, "attempt": attempt,
                                  "worker": worker.worker_id}
        lease = Lease(job, ttr, self.runner.stop, timeout_s=worker.conf.timeout,
                      touched_at=job.asked_at)
        capped = decide(attempt, worker.policy)  # before decoding (see bystroq.worker.decide)
        if capped is not None:
            return self._give_up(lease, attempt, fields, capped)
        try:
            data = worker.decoder.decode(job.body)
        except DecodeError as exc:
            invalid = decide(attempt, worker.policy, decoded=False)
            assert invalid is not None
            log = JobLog(worker.log, queueID=job.id, submissionID=None, attempt=attempt)
            log.warning("invalid job buried", reason=str(exc), server=job.server.name)
            message = self._failed_message(None, job.id, exc)
            self._report(lease, stamp(message, **fields, at=time.time(), seq=0),
                         invalid.disposition, log)
            return Outcome.INVALID
        log = JobLog(worker.log, queueID=job.id, submissionID=data.submissionID, attempt=attempt)

        try:
            started = encode(stamp(worker.listener.submit_msg_fn(data), **fields,
                                   at=time.time(), seq=0), worker.wire)
        except Exception as exc:  # a listener bug fails the job, never the worker
            reason = f"submit_msg_fn failed: {describe(exc)}"
            log.error("job failed", reason=reason)
            message = self._failed_message(data, job.id, exc)
            self._report(lease, stamp(message, **fields, at=time.time(), seq=0),
                         Disposition.BURY, log)
            return Outcome.FAILED
        too_big = self._too_big(conn, started, "started")
        if too_big is not None:
            return self._fail_at_once(lease, data, too_big, fields, 0, log)
        if not self._put_unanswered(lease, started, log):
            return Outcome.LOST
        publisher = ProgressPublisher(
            job.server.host, job.server.port, worker.conf.events,
            ProgressMessage(submissionID=data.submissionID, **fields),
            sender=self._progress_sender(lease), wire=worker.wire,
        )
        lease.started_at = time.monotonic()
        worker.keeper.add(lease)
        error: BaseException | None
        try:
            execution, error = self.runner.run(data, job.body, publisher, fields)
        except LeaseLost as exc:
            log.warning("lease lost: nothing reported for this attempt", reason=str(exc))
            return Outcome.LOST
        except ShuttingDown as exc:
            return self._release(job, log, str(exc))
        except Cancelled as exc:
            message = CancelledJobMessage(submissionID=data.submissionID, reason=str(exc))
            seq = publisher.last_seq + 1
            self._report(lease, stamp(message, **fields, at=time.time(), seq=seq),
                         Disposition.DELETE, log)
            log.info("job cancelled", reason=str(exc))
            return Outcome.CANCELLED
        except (JobTimeout, HandlerDied) as exc:
            execution, error = Execution(error=describe(exc), error_names=exception_names(exc),
                                         last_seq=publisher.last_seq), exc
        finally:
            worker.keeper.remove(lease)
            with conn.lock:
                lease.done = True
        if isinstance(lease.stopped, LeaseLost) or not lease.confirm():
            log.warning("lease lost: nothing reported for this attempt")
            return Outcome.LOST
        too_big = (None if execution.completed is None
                   else self._too_big(conn, execution.completed, "completed"))
        decision = decide(attempt, worker.policy, decoded=True, execution=execution,
                          completed_fits=too_big is None)
        assert decision is not None
        if decision.verdict is Verdict.COMPLETED:
            assert execution.completed is not None
            # The event goes with the next reserve, the delete with the command after it,
            # once the event is stored: two round trips a job instead of four.
            self._deferred = Deferred(lease, execution.completed, log)
            return Outcome.COMPLETED
        if too_big is not None:  # trying again would make the same result: no retry
            return self._fail_at_once(lease, data, too_big, fields, execution.last_seq, log)
        return self._failed(lease, data, execution, error, fields, log, decision)

    def _give_up(self, lease: Lease, attempt: int, fields: dict[str, Any],
                 decision: Decision) -> Outcome:
        """Past max_attempts: a failed event (gaveUp) and a bury, without decoding the body
        as a job (that may be what killed the workers before)."""
        job, reason = lease.job, decision.reason or "gave up"
        submission_id = submission_id_of(job.body)
        log = self.worker.log.bind(queueID=job.id, submissionID=submission_id, attempt=attempt)
        log.error("poison job buried", reason=reason)
        message: Any = (
            InvalidJobMessage(queueID=job.id, reason=reason) if submission_id is None
            else FailedJobMessage(submissionID=submission_id, reason=reason, gaveUp=True)
        )
        self._report(lease, stamp(message, **fields, at=time.time(), seq=0),
                     decision.disposition, log)
        return Outcome.GAVE_UP

    def _failed(
        self, lease: Lease, data: Any, execution: Execution, error: BaseException | None,
        fields: dict[str, Any], log: Any, decision: Decision,
    ) -> Outcome:
        job = lease.job
        reason = decision.reason or "handler failed"
        seq = execution.last_seq + 1
        if decision.verdict is Verdict.RETRYING:
            message = RetryingJobMessage(submissionID=data.submissionID, reason=reason,
                                         delay_s=decision.delay_s)
            self._report(lease, stamp(message, **fields, at=time.time(), seq=seq),
                         decision.disposition, log, delay=decision.delay_s)
            log.warning("job will be retried", reason=reason, delay_s=decision.delay_s)
            return Outcome.RETRYING
        exc = error if error is not None else HandlerError(reason)
        message = self._failed_message(data, job.id, exc)
        extra = {"traceback": execution.traceback} if execution.traceback else {}
        self._report(lease, _with_traceback(stamp(message, **fields, at=time.time(), seq=seq),
                                            execution.traceback),
                     decision.disposition, log)
        log.error("job failed", reason=reason, **extra)
        return Outcome.FAILED

    def _fail_at_once(self, lease: Lease, data: Any, exc: BaseException,
                      fields: dict[str, Any], seq: int, log: Any) -> Outcome:
        log.error("job failed", reason=str(exc))
        message = self._failed_message(data, lease.job.id, exc)
        self._report(lease, stamp(message, **fields, at=time.time(), seq=seq),
                     Disposition.BURY, log)
        return Outcome.FAILED

    def _too_big(self, conn: Connection, body: bytes, what: str) -> JobTooBig | None:
        """Why an event cannot be put on the job's server, if it is larger than the server's
        max-job-size (the put would be refused, and retrying makes the same event)."""
        with conn.lock:
            try:
                limit = conn.max_job_size()  # asked once per connection
            except (*CONNECTION_ERRORS, greenstalk.BeanstalkdError):
                return None  # the put meets the same trouble and handles it
        if len(body) <= limit:
            return None
        return JobTooBig(f"the {what} event is {len(body)} bytes, over the server's "
                         f"max-job-size of {limit} bytes; return less (e.g. where the result "
                         f"is stored) or start beanstalkd with a larger -z")

    def _failed_message(self, data: Any, queue_id: int, exc: BaseException) -> Any:
        try:
            return self.worker.listener.failed_msg_fn(data, queue_id, exc)
        except Exception as fn_exc:
            self.worker.log.error("failed_msg_fn raised; using the default failed message",
                                  queueID=queue_id, error=describe(fn_exc))
            return default_failed_msg_fn(data, queue_id, exc)

    # -- talking to the server the job came from ---------------------------------------

    def _still_ours(self, deferred: Deferred) -> bool:
        """Whether a deferred completed event may be put now (the caller holds the lock and
        writes it next); if not, the job was lost and it is counted so."""
        try:
            if deferred.job.held:
                _ = deferred.job.conn.client  # replies still owed are read before the check
        except CONNECTION_ERRORS as exc:
            deferred.job.conn.failed(exc)  # the server releases the job
        self._retract_strays()  # a started event the owed replies just showed stray
        if deferred.lease.confirm():
            return True
        deferred.log.warning("lease lost before the completed event: nothing reported")
        self.worker.recount(Outcome.COMPLETED, Outcome.LOST)
        return False

    def _put(self, lease: Lease, body: bytes, log: Any) -> bool:
        """Put an event; on a server refusal the job is released to be tried later."""
        job = lease.job
        conn = job.conn
        with conn.lock:
            if not job.held:  # the connection was replaced: the server released the job
                log.warning("event not stored: the job's connection was lost")
                return False
            try:
                _ = conn.client  # replies still owed are read first
                if not lease.confirm():
                    log.warning("lease lost before the event: nothing reported")
                    return False
                sent_at = time.monotonic()
                touch, put = exchange(conn, [lease.touch_command(), put_command(body)])
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)  # the server releases the job when the connection closes
                log.warning("event not stored: connection lost", error=str(exc))
                return False
            if not lease.touched(touch[0], sent_at):
                self._retract(conn, put, log, "reported")
                return False
            if put[0] != b"INSERTED":
                log.error("event not stored: job released for later", error=put[0].decode(),
                          delay_s=REPORT_RETRY_DELAY_S)
                self._job_command(job, Disposition.RELEASE, log, REPORT_RETRY_DELAY_S)
                return False
            return True

    def _put_unanswered(self, lease: Lease, body: bytes, log: Any) -> bool:
        """Put an event without waiting for the reply (read before the connection's next
        command): the started event costs no round trip. False if the job is not ours."""
        conn = lease.job.conn
        with conn.lock:
            if not lease.confirm():
                log.warning("lease lost before the started event: nothing reported")
                return False
            held: list[bool] = []
            sent_at = time.monotonic()

            def on_touch(reply: Reply) -> None:
                held.append(lease.touched(reply.status, sent_at))  # if not, the handler stops

            def on_put(reply: Reply) -> None:
                if reply.status != b"INSERTED":
                    log.error("started event not stored", error=reply.status.decode())
                elif held == [False]:  # deleted with the slot's next command
                    self._strays.append((conn, int(reply.values[0])))

            try:
                conn.queue(lease.touch_command(), on_touch)
                conn.queue(put_command(body), on_put)
                conn.flush()
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)  # the server releases the job when the connection closes
                log.warning("event not stored: connection lost", error=str(exc))
                return False
        return True

    def _retract(self, conn: Connection, put: Reply, log: Any, what: str) -> None:
        """Delete an event the server stored after the job stopped being ours (its write
        was delayed past the TTR): no consumer should take it for the holder's."""
        if put[0] != b"INSERTED":
            return
        event_id = int(put[1][0])
        log.warning(f"{what} event arrived after the job was lost: deleted", eventID=event_id)
        try:
            exchange(conn, [b"delete %d\r\n" % event_id])
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)
            log.error("could not delete an event stored after the job was lost",
                      eventID=event_id, error=str(exc))

    def _retract_strays(self) -> None:
        """Delete the started events found stored after their job was lost."""
        while self._strays:
            conn, event_id = self._strays.pop()
            with conn.lock:
                self._retract(conn, Reply(b"INSERTED", [b"%d" % event_id], None),
                              self.worker.log, "started")

    def _report(self, lease: Lease, message: Any, action: Disposition, log: Any,
                delay: int = 0) -> bool:
        """Put the event, then delete/bury/release the job; never delete without the event."""
        body = encode(message, self.worker.wire)
        event = getattr(message, "event", None)
        what = event.value if isinstance(event, Event) else "reported"
        too_big = self._too_big(lease.job.conn, body, what)
        if too_big is not None:
            log.error("event too big for the server: a failed event says so instead",
                      reason=str(too_big))
            message, action = _small_failed(message, lease.job.id, too_big), Disposition.BURY
            body = encode(message, self.worker.wire)
        if not self._put(lease, body, log):
            return False
        with lease.job.conn.lock:
            return self._job_command(lease.job, action, log, delay)

    def _job_command(self, job: Reserved, action: Disposition, log: Any,
                     delay: int = 0) -> bool:
        """delete, bury or release (keeping the job's priority) over the reserving connection."""
        conn, ref = job.conn, greenstalk.Job(job.id, b"")
        try:
            # Not checked against `job.held`: bury and release only work for the reserving
            # connection anyway, and a delete after the completed event was stored should
            # remove the job even if it went back to ready meanwhile.
            match action:
                case Disposition.DELETE:
                    conn.client.delete(ref)
                case Disposition.BURY:
                    conn.client.bury(ref, priority=job.priority)
                case Disposition.RELEASE:
                    conn.client.release(ref, priority=job.priority, delay=delay)
            return True
        except greenstalk.NotFoundError:
            log.warning(f"{action.value} after the event: job no longer ours", queueID=job.id)
        except greenstalk.BeanstalkdError as exc:  # e.g. OUT_OF_MEMORY on a bury
            log.error(f"{action.value} after the event refused by the server", queueID=job.id,
                      error=type(exc).__name__)
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)
            log.warning(f"{action.value} after the event: connection lost", queueID=job.id,
                        error=str(exc))
        return False

    def _release(self, job: Reserved, log: Any, reason: str) -> Outcome:
        with job.conn.lock:
            self._job_command(job, Disposition.RELEASE, log, 0)
        log.info("job released for another worker", reason=reason)
        return Outcome.RELEASED

    def _progress_sender(self, lease: Lease) -> Callable[[str, bytes], None]:
        conn = lease.job.conn

        def send(tube: str, body: bytes) -> None:
            with self.runner.shield(), conn.lock:
                try:
                    conn.use_tube(tube)  # the put below goes to `tube`
                    too_big = self._too_big(conn, body, "progress")
                    if too_big is not None:
                        raise too_big  # the handler's publish fails with the reason
                    if not lease.confirm():  # halted: the handler stops when the shield ends
                        return
                    sent_at = time.monotonic()
                    touch, put = exchange(conn, [lease.touch_command(), put_command(body)])
                    if not lease.touched(touch[0], sent_at):
                        self._retract(conn, put, self.worker.log, "progress")
                        return
                    expect(put, b"INSERTED")  # a refusal raises in the handler's publish
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)
                    raise

        return send

    def drop_connections(self) -> None:
        """Close every connection (the server gives their reserved jobs out again)."""
        self._deferred = self._pending_delete = None
        for conn in self.conns:
            with conn.lock:
                conn.failed(RuntimeError("slot stopped"))

    def close(self) -> None:
        self.flush()
        self.runner.close()
        for conn in self.conns:
            with conn.lock:
                conn.close()


class JobLog:
    """A job's logger whose context is bound only when a line is logged: one job's fields
    cost nothing when the level filters its lines out."""

    __slots__ = ("_base", "_bound", "_fields")

    def __init__(self, base: Any, **fields: Any) -> None:
        self._base, self._fields, self._bound = base, fields, None

    def bind(self, **fields: Any) -> Any:
        return self._logger().bind(**fields)

    def _logger(self) -> Any:
        if self._bound is None:
            self._bound = self._base.bind(**self._fields)
        return self._bound

    def debug(self, event: str, **fields: Any) -> None:
        enabled = getattr(self._base, "is_enabled_for", None)
        if enabled is None or enabled(logging.DEBUG):
            self._logger().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._logger().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._logger().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._logger().error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._logger().exception(event, **fields)


class _Summary:
    """The worker's info line every SUMMARY_INTERVAL_S: jobs a second and outcomes since
    the last one (failures are logged one by one as they happen)."""

    def __init__(self, log: Any, counts: Counter[Outcome]) -> None:
        self.log, self.counts = log, counts
        self.started = self.at = time.monotonic()
        self.last: Counter[Outcome] = Counter()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.at < SUMMARY_INTERVAL_S:
            return
        since = Counter(self.counts)
        since.subtract(self.last)
        jobs = sum(v for k, v in since.items() if k is not Outcome.NONE)
        if jobs:
            self.log.info("jobs done", jobs=jobs, per_s=round(jobs / (now - self.at), 1),
                          **{k.value: v for k, v in since.items() if v and k is not Outcome.NONE})
        self.last, self.at = Counter(self.counts), now

    def overall(self) -> dict[str, float]:
        jobs = sum(v for k, v in self.counts.items() if k is not Outcome.NONE)
        elapsed = time.monotonic() - self.started
        return {"per_s": round(jobs / elapsed, 1)} if jobs and elapsed > 0 else {}


def _small_failed(message: Any, queue_id: int, reason: BaseException) -> Any:
    """A failed event in place of one too big to put, with the same extension fields."""
    extra: dict[str, Any] = {key: getattr(message, key, None)
                             for key in ("attempt", "worker", "at", "seq")}
    submission_id = getattr(message, "submissionID", None)
    if submission_id is None:
        return InvalidJobMessage(queueID=queue_id, reason=str(reason), **extra)
    return FailedJobMessage(submissionID=submission_id, queueID=queue_id, reason=str(reason),
                            **extra)


def _with_traceback(message: Any, traceback: str | None) -> Any:
    """A failed message with the handler's traceback, where its type can carry one (a
    FailedJobMessage, or a plain mapping); other shapes are sent as they are."""
    if traceback is None:
        return message
    if isinstance(message, FailedJobMessage) and message.traceback is None:
        return msgspec.structs.replace(message, traceback=traceback)
    if isinstance(message, dict) and "traceback" not in message:
        return {**message, "traceback": traceback}
    return message
