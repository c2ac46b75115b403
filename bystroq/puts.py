"""The bookkeeping of puts: deadlines and sizes, the messages for puts never answered, and
a job's submissionID."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from bystroq.errors import (
    JobTooBig,
)
from bystroq.servers import (
    Connection,
    Server,
)


class NoAnswer(Exception):
    """A put was sent to `server` at `sent_at` (wall clock) and never answered."""

    def __init__(self, server: Server, sent_at: float, error: BaseException) -> None:
        super().__init__(f"{server}: {error}")
        self.server, self.sent_at, self.error = server, sent_at, error


def unknown_message(lost: NoAnswer, submission_id: str | int | None, wait_s: float) -> str:
    what = "the job" if submission_id is None else f"submission {submission_id!r}"
    error = str(lost.error) or type(lost.error).__name__
    return (
        f"{lost.server} did not answer the put of {what} within {wait_s:g} s ({error}); it "
        f"may still run: do not submit it again, follow its record (state unknown) or events"
    )


def drop_if_closed(conn: Connection) -> None:
    """Close a connection the server closed since its last command (it restarted or went
    away), so the put goes over a fresh one: a put sent on a dead connection would get
    no answer, and its outcome would look unknown when it is known (not put)."""
    if conn.closed_by_server():
        conn.close()


def bound_wait(conn: Connection, remaining_s: float, wait_s: float) -> None:
    """Keep a put within the caller's deadline; the socket's timeout is changed (two
    system calls) only when it is off by more than a tenth of the wait, i.e. after a
    server failed within this submit, not on every put."""
    current = conn._limit_s or wait_s
    if abs(current - remaining_s) > wait_s / 10:
        conn.limit(remaining_s)


def check_size(conn: Connection, body: bytes) -> None:
    if len(body) > conn.max_job_size():
        raise JobTooBig(too_big(conn, body))


def too_big(conn: Connection, body: bytes) -> str:
    return (
        f"job body is {len(body)} bytes, over {conn.server}'s max-job-size of "
        f"{conn.max_job_size()} bytes; pass large data by reference (a path or URL) "
        f"or start beanstalkd with a larger -z"
    )


def either_id(data: Mapping[str, Any]) -> str | int | None:
    """The submission id in either spelling of the wire."""
    value = data.get("submissionID", data.get("submissionId"))
    return value if isinstance(value, str | int) else None


def job_submission_id(job: msgspec.Struct | Mapping[str, Any] | bytes) -> str | int | None:
    if isinstance(job, msgspec.Struct):  # the usual case first
        value = getattr(job, "submissionID", None)
        return value if isinstance(value, str | int) else None
    if isinstance(job, bytes):
        try:
            data = msgspec.json.decode(job)
        except msgspec.DecodeError:
            return None
        return either_id(data) if isinstance(data, dict) else None
    return either_id(job)
