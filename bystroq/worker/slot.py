"""A slot: one job at a time, reserved over its own connections, run by its runner, its
completed event put with the next reserve and its delete with the command after that."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import greenstalk

from bystroq.errors import (
    Cancelled,
    DecodeError,
    HandlerDied,
    JobTimeout,
    LeaseLost,
    ShuttingDown,
)
from bystroq.listener import (
    describe,
)
from bystroq.messages import (
    CancelledJobMessage,
    FailedJobMessage,
    InvalidJobMessage,
    ProgressMessage,
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
    connections,
    delete_then_reserve,
    exchange,
    expect,
    job_reserves_ttr_pri,
    put_command,
    read_reply,
    reserved_job,
    send,
)
from bystroq.tracing import job_span, traceparent_of
from bystroq.worker.decide import Decision, Disposition, Verdict, decide
from bystroq.worker.execute import Execution
from bystroq.worker.lease import Lease
from bystroq.worker.outcome import Deferred, Outcome, Taken
from bystroq.worker.policy import exception_names
from bystroq.worker.report import REPORT_RETRY_DELAY_S, JobLog, Reporting
from bystroq.worker.runners import InlineRunner, ProcessRunner, Runner

if TYPE_CHECKING:
    from bystroq.worker.loop import Worker

# With several servers, the longest wait between looks at them while none has a job.
MULTI_SERVER_POLL_MAX_S = 0.1


class Slot(Reporting):
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
            self.worker.completed_stored()
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
                attempt, ttr, job.priority, age, deleted = job_reserves_ttr_pri(
                    conn, job.id, delete_first=pending.id if pending is not None else None)
            if pending is not None and not deleted:
                self._delete_missed(pending)
        except greenstalk.NotFoundError:
            return Outcome.LOST
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)
            return Outcome.LOST
        worker.observer.queue_waited(age)
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
        traceparent = traceparent_of(job.body)
        if traceparent is not None:  # the job's trace context goes on each of its events
            fields["traceparent"] = traceparent

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
            with job_span(traceparent, worker.category, job.id, attempt,
                          worker.worker_id) as span:
                execution, error = self.runner.run(data, job.body, publisher, fields)
                span.failed(execution.error)
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
            worker.observer.handler_ran(time.monotonic() - lease.started_at)
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
