"""Cancelling a job: delete it if no worker holds it, else ask the worker that does."""

from __future__ import annotations

import enum

import greenstalk

from bystroq.messages import encode
from bystroq.servers import Connection, Server
from bystroq.worker.control import CancelRequest, control_tube


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
