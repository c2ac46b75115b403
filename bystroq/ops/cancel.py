"""Cancelling a job: delete it if no worker holds it, else ask the worker that does."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import greenstalk

from bystroq.config import parse_address
from bystroq.control import CancelRequest, control_tube
from bystroq.errors import BystroqError
from bystroq.messages import encode
from bystroq.records.model import FINAL_STATES
from bystroq.records.store import RecordStore
from bystroq.servers import Connection, Server


class CancelResult(str, enum.Enum):
    DELETED = "deleted"  # it had not started: it never runs
    REQUESTED = "requested"  # running: its worker was asked to stop it
    NOT_FOUND = "not_found"  # not on the server (finished, or never there)


def cancel_job(
    server: Server, queue_id: int, worker_id: str | None,
    submission_id: str | int | None = None, reason: str = "cancelled by request",
) -> CancelResult:
    """Delete job `queue_id` from `server`; if a worker holds it, send that worker a cancel."""
    conn = Connection(server)
    try:
        client = conn.client
        try:
            state = client.stats_job(queue_id)["state"]
        except greenstalk.NotFoundError:
            return CancelResult.NOT_FOUND
        if state != "reserved":
            try:
                client.delete(queue_id)
                return CancelResult.DELETED
            except greenstalk.NotFoundError:
                pass  # reserved in between: ask its worker
        if worker_id is None:
            return CancelResult.NOT_FOUND
        request = CancelRequest(queueID=queue_id, submissionID=submission_id, reason=reason)
        conn.use_tube(control_tube(worker_id)).put(encode(request), ttr=60)
        return CancelResult.REQUESTED
    finally:
        conn.close()


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel did, and the sentence that says so."""

    result: CancelResult
    message: str

    def __str__(self) -> str:
        return self.message


def cancel_submission(store: RecordStore, submission_id: str,
                      reason: str = "cancelled by request") -> CancelOutcome:
    """Cancel a submission by its record: deleted if not started, else its worker asked."""
    record = store.get(submission_id)
    if record is None:
        raise BystroqError(f"no submission {submission_id!r} in {store.url}")
    if record.state in FINAL_STATES:
        raise BystroqError(f"{submission_id}: already {record.state}; nothing to cancel")
    if record.server is None or record.queue_id is None:
        raise BystroqError(f"{submission_id}: the record has no queueID yet; try again")
    host, port = parse_address(record.server)
    result = cancel_job(Server(host, port), record.queue_id, record.worker,
                        record.submission_id, reason)
    if result is CancelResult.DELETED:
        store.record_event(submission_id, "cancelled", reason)
        return CancelOutcome(result, f"{submission_id}: cancelled; job {record.queue_id} deleted, "
                         "it will not run")
    if result is CancelResult.REQUESTED:
        return CancelOutcome(result, f"{submission_id}: cancel sent to worker {record.worker}; "
                         "the record turns cancelled when its event is consumed")
    raise BystroqError(
        f"{submission_id}: job {record.queue_id} is no longer on {record.server} "
        f"(it may have just finished; see `bystroq status {submission_id}`)"
    )
