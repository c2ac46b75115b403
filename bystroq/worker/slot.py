"""A slot: jobs run one at a time, taken from its intake (reserved in batches), run by its
runner, their events pipelined: a started event is written without waiting for its answer,
a completed one goes with the slot's next write, and the job's delete with the write after
its event's answer (never before the event is stored). Outcomes are counted once, where
they become known: in the answer to a completed event, or at once for the rest."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bystroq.beanstalk import framing
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
    Reply,
    connections,
    exchange,
    expect,
    put_command,
)
from bystroq.tracing import job_span, traceparent_of
from bystroq.worker.decide import Decision, Disposition, Verdict, decide
from bystroq.worker.execute import Execution
from bystroq.worker.intake import Intake
from bystroq.worker.lease import Lease
from bystroq.worker.outcome import Outcome, Taken
from bystroq.worker.policy import exception_names
from bystroq.worker.report import REPORT_RETRY_DELAY_S, JobLog, Reporting
from bystroq.worker.runners import InlineRunner, ProcessRunner, Runner

if TYPE_CHECKING:
    from bystroq.worker.loop import Worker


class Slot(Reporting):
    """One job at a time: its own connection per server (jobs are bound to the connection
    that reserved them), its own intake and its own runner."""

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
        self.intake = Intake(worker, self.conns, self._count)
        # The last job whose completed event was queued: `flush` says if it was not stored.
        self._last_completed: Taken | None = None
        worker.keeper.tending.append(self.intake.tend)

    # -- taking and settling -----------------------------------------------------------

    def reserve(self, wait_s: float, most: int | None = None) -> Taken | None:
        """The next job held (reserving a batch of up to `most` first if none is), waiting
        up to `wait_s` for one (0: only what is ready)."""
        return self.intake.take(wait_s, most)

    def _count(self, job: Taken, outcome: Outcome) -> None:
        """A job's outcome, known now: recorded on the job and counted, once."""
        if job.outcome is None:
            job.outcome = outcome
            self.worker.count(outcome)

    def flush(self) -> Outcome | None:
        """Give back the jobs held ahead, send what is held back and read every answer;
        returns the last completed job's outcome if its event turned out not stored."""
        self.intake.give_back()
        for conn in self.conns:
            with conn.lock:
                try:
                    while conn.owes:
                        conn.settle()
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)  # the server gives the jobs out again
        last, self._last_completed = self._last_completed, None
        if last is None:
            return None
        if last.outcome is None:  # its answer never came: the job runs again elsewhere
            self._count(last, Outcome.LOST)
        return last.outcome if last.outcome is not Outcome.COMPLETED else None

    # -- handling one job --------------------------------------------------------------

    def process(self, job: Taken) -> Outcome:
        """Validate, run and report one held job. Returns its outcome as known now: for a
        completed job, COMPLETED while its event waits for the next write (`job.outcome`
        and the worker's counts take the answer)."""
        outcome = self._process(job)
        if outcome is not Outcome.COMPLETED:
            self._count(job, outcome)
        return outcome

    def _process(self, job: Taken) -> Outcome:
        worker, conn, lease = self.worker, job.conn, job.lease
        assert lease is not None
        lease.stop = self.runner.stop
        if lease.stopped is not None:
            return self._stopped_ahead(job, lease)
        worker.observer.queue_waited(job.age)
        attempt = lease.attempt
        fields: dict[str, Any] = {"queueID": job.id, "attempt": attempt,
                                  "worker": worker.worker_id}
        capped = decide(attempt, worker.policy)  # before decoding (see bystroq.worker.decide)
        if capped is not None:
            return self._done(lease, self._give_up(lease, attempt, fields, capped))
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
            return self._done(lease, Outcome.INVALID)
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
            return self._done(lease, Outcome.FAILED)
        too_big = self._too_big(conn, started, "started")
        if too_big is not None:
            return self._done(lease, self._fail_at_once(lease, data, too_big, fields, 0, log))
        # In a batch of several (handlers have been short), with the handler's progress
        # going over this connection too (inline), the started event goes with the
        # completed one's write (the keeper's tick sends it if this handler runs long);
        # otherwise it is written now, ahead of anything a child process sends.
        send = self.intake.last_batch <= 1 or not isinstance(self.runner, InlineRunner)
        if not self._put_unanswered(lease, started, log, send=send):
            return self._done(lease, Outcome.LOST)
        publisher = ProgressPublisher(
            job.server.host, job.server.port, worker.conf.events,
            ProgressMessage(submissionID=data.submissionID, **fields),
            sender=self._progress_sender(lease), wire=worker.wire,
        )
        lease.started_at = time.monotonic()
        lease.running = True
        error: BaseException | None
        try:
            with job_span(traceparent, worker.category, job.id, attempt,
                          worker.worker_id) as span:
                execution, error = self.runner.run(data, job.body, publisher, fields)
                span.failed(execution.error)
        except LeaseLost as exc:
            log.warning("lease lost: nothing reported for this attempt", reason=str(exc))
            return self._done(lease, Outcome.LOST)
        except ShuttingDown as exc:
            return self._done(lease, self._release(job, log, str(exc)))
        except Cancelled as exc:
            message = CancelledJobMessage(submissionID=data.submissionID, reason=str(exc))
            seq = publisher.last_seq + 1
            self._report(lease, stamp(message, **fields, at=time.time(), seq=seq),
                         Disposition.DELETE, log)
            log.info("job cancelled", reason=str(exc))
            return self._done(lease, Outcome.CANCELLED)
        except (JobTimeout, HandlerDied) as exc:
            execution, error = Execution(error=describe(exc), error_names=exception_names(exc),
                                         last_seq=publisher.last_seq), exc
        finally:
            self.intake.batch.ran(time.monotonic() - lease.started_at)
            with conn.lock:
                lease.done = True
            worker.observer.handler_ran(time.monotonic() - lease.started_at)
        if isinstance(lease.stopped, LeaseLost) or not lease.confirm():
            log.warning("lease lost: nothing reported for this attempt")
            return self._done(lease, Outcome.LOST)
        too_big = (None if execution.completed is None
                   else self._too_big(conn, execution.completed, "completed"))
        decision = decide(attempt, worker.policy, decoded=True, execution=execution,
                          completed_fits=too_big is None)
        assert decision is not None
        if decision.verdict is Verdict.COMPLETED:
            assert execution.completed is not None
            return self._done(lease, self._queue_completed(job, lease, execution.completed,
                                                           log))
        if too_big is not None:  # trying again would make the same result: no retry
            return self._done(lease, self._fail_at_once(lease, data, too_big, fields,
                                                        execution.last_seq, log))
        return self._done(lease, self._failed(lease, data, execution, error, fields, log,
                                              decision))

    def _done(self, lease: Lease, outcome: Outcome) -> Outcome:
        """The job's lease needs no more touches from the keeper."""
        self.worker.keeper.remove(lease)
        return outcome

    def _stopped_ahead(self, job: Taken, lease: Lease) -> Outcome:
        """A held job stopped before its turn: cancelled (reported, deleted), lost (nothing
        to say) or shutting down (given back unrun)."""
        reason = lease.stopped
        log = JobLog(self.worker.log, queueID=job.id, attempt=lease.attempt)
        if isinstance(reason, Cancelled) and lease.confirm():
            submission_id = submission_id_of(job.body)
            message: Any = (
                InvalidJobMessage(queueID=job.id, reason=str(reason)) if submission_id is None
                else CancelledJobMessage(submissionID=submission_id, reason=str(reason)))
            self._report(lease, stamp(message, queueID=job.id, attempt=lease.attempt,
                                      worker=self.worker.worker_id, at=time.time(), seq=0),
                         Disposition.DELETE, log)
            log.info("job cancelled before it ran", reason=str(reason))
            return self._done(lease, Outcome.CANCELLED)
        if isinstance(reason, ShuttingDown):
            # Given back with the rest, unrun: settled without being counted (as every job
            # held ahead and given back).
            job.outcome = Outcome.RELEASED
            self.intake.ahead.appendleft(job)
            self.intake.give_back()
            return Outcome.RELEASED
        log.warning("lease lost before the job ran: nothing reported", reason=str(reason))
        return self._done(lease, Outcome.LOST)

    def _queue_completed(self, job: Taken, lease: Lease, body: bytes, log: Any) -> Outcome:
        """Queue the completed event behind a touch, for the connection's next write. Its
        answer settles the job: stored by the holder, the delete is queued and the job
        counted completed; stored after the job was lost, the event is deleted; refused,
        the job is released to be tried later."""
        conn = job.conn
        with conn.lock:
            if not job.held:
                log.warning("event not stored: the job's connection was lost")
                return Outcome.LOST
            sent_at = time.monotonic()
            touched: list[bool] = []
            conn.queue(lease.touch_command(),
                       lambda reply: touched.append(lease.touched(reply.status, sent_at)))
            conn.queue(put_command(body),
                       functools.partial(self._on_completed, job, lease, log, touched))
        self._last_completed = job
        return Outcome.COMPLETED

    def _on_completed(self, job: Taken, lease: Lease, log: Any, touched: list[bool],
                      reply: Reply) -> None:
        conn = job.conn
        if touched != [True]:
            self._queue_retract(job, reply, log, "completed")
            self._count(job, Outcome.LOST)
        elif reply.status == b"INSERTED":
            conn.queue(framing.delete(job.id), functools.partial(self._on_delete, job))
            self._count(job, Outcome.COMPLETED)
            log.debug("job completed", duration_s=round(time.monotonic() - lease.started_at, 6))
        else:
            log.error("event not stored: job released for later",
                      error=reply.status.decode(), delay_s=REPORT_RETRY_DELAY_S)
            conn.queue(framing.release(job.id, job.priority, REPORT_RETRY_DELAY_S))
            self._count(job, Outcome.RELEASED)

    def _on_delete(self, job: Taken, reply: Reply) -> None:
        if reply.status != b"DELETED":
            self.worker.log.warning("delete after the event: job no longer ours",
                                    queueID=job.id, answer=reply.status.decode())

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
        for job in self.intake.ahead:
            if job.lease is not None:
                self.worker.keeper.remove(job.lease)
        self.intake.ahead.clear()
        for conn in self.conns:
            with conn.lock:
                conn.failed(RuntimeError("slot stopped"))

    def close(self) -> None:
        self.flush()
        if self.intake.tend in self.worker.keeper.tending:
            self.worker.keeper.tending.remove(self.intake.tend)
        self.runner.close()
        for conn in self.conns:
            with conn.lock:
                conn.close()
