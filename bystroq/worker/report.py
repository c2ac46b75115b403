"""A slot's side of talking to the server a job came from: putting events only while the
job is held (behind a touch), failed and retrying events, and the job's delete, bury or
release. Slot inherits it; which event and disposition is decide()'s rule."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import greenstalk
import msgspec

from bystroq.errors import (
    HandlerError,
    JobTooBig,
)
from bystroq.listener import (
    default_failed_msg_fn,
    describe,
)
from bystroq.messages import (
    Event,
    FailedJobMessage,
    InvalidJobMessage,
    RetryingJobMessage,
    encode,
    stamp,
)
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    Reply,
    Reserved,
    exchange,
    put_command,
)
from bystroq.worker.decide import Decision, Disposition, Verdict
from bystroq.worker.execute import Execution
from bystroq.worker.lease import Lease
from bystroq.worker.outcome import Outcome

if TYPE_CHECKING:
    from bystroq.worker.loop import Worker

# How long a failed report waits before the job is offered again.
REPORT_RETRY_DELAY_S = 5


class Reporting:
    """The reporting half of a Slot (see bystroq.worker.slot)."""

    worker: Worker
    conns: list[Connection]

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
        known = conn.known_max_job_size
        if known is not None and len(body) <= known:
            return None
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

    def _put_unanswered(self, lease: Lease, body: bytes, log: Any, send: bool = True) -> bool:
        """Put an event without waiting for the reply (read with the connection's next
        command): the started event costs no round trip. Written now if `send`, else with
        the connection's next write. False if the job is not ours."""
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
                elif held == [False]:  # deleted with the connection's next write
                    self._queue_retract(lease.job, reply, log, "started")

            try:
                conn.queue(lease.touch_command(), on_touch)
                conn.queue(put_command(body), on_put)
                if send:
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

    def _queue_retract(self, job: Reserved, put: Reply, log: Any, what: str) -> None:
        """`_retract` from a reply's callback: the delete goes with the connection's next
        write."""
        if put.status != b"INSERTED":
            return
        event_id = int(put.values[0])
        log.warning(f"{what} event arrived after the job was lost: deleted", eventID=event_id)
        job.conn.queue(b"delete %d\r\n" % event_id)

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
                    self.worker.observer.buried()
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
