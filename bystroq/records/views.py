"""The public schema: what people and programs see of submissions, batches and servers.

Every `--json` output (and later the HTTP API) is one of these Structs, named like the
wire (`submissionID`, `queueID`, camelCase throughout) and free of the store's bookkeeping.
The internal Record may change; these change only with care (README: "JSON outputs").
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from bystroq.messages import key_to_submission_id
from bystroq.records.batchstore import Batch
from bystroq.records.model import EVENT_FIELDS as EVENT_FIELDS  # the vocabulary, re-exported
from bystroq.records.model import STATES as STATES
from bystroq.records.model import Record, TimelineEntry
from bystroq.records.workers import WorkerRow

# A worker silent for this many of its heartbeat intervals is shown as gone.
GONE_AFTER_INTERVALS = 3

SubmissionID = str | int


class View(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """Base of the public views: camelCase keys, absent values written as null."""


class SubmissionView(View, frozen=True):
    """One submission, as its events left it."""

    submission_id: SubmissionID = msgspec.field(name="submissionID")
    category: str
    state: str
    attempts: int
    queue_id: int | None = msgspec.field(name="queueID")
    server: str | None
    worker: str | None
    progress: int
    skipped: int
    total: int | None  # how much work the handler said there is, when it said
    percent: float | None  # progress of total
    eta_s: float | None  # while it runs, at the rate so far
    messages: list[str]
    result: dict[str, Any] | None
    reason: str | None
    traceback: str | None  # where the handler raised, for a failure
    traceparent: str | None  # the W3C trace context it was submitted in, if any
    batch: str | None
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float | None
    runs: int = 1  # times it was put: more than 1 after `retry` or a duplicate submit


class TimelineEventView(View, frozen=True):
    """One event the store received for a submission, and whether it changed the record."""

    at: float
    event: str
    attempt: int | None
    seq: int | None
    worker: str | None
    applied: bool
    message: dict[str, Any]  # the event as it was on the wire


class SubmissionStatusView(View, frozen=True):
    """`bystroq status`: the submission and its timeline, oldest event first."""

    submission: SubmissionView
    timeline: list[TimelineEventView]


class SubmittedView(View, frozen=True):
    """A job put on a server: where it went."""

    submission_id: SubmissionID | None = msgspec.field(name="submissionID")
    queue_id: int = msgspec.field(name="queueID")
    server: str
    tube: str


class FailureView(View, frozen=True):
    """A failed submission of a batch, and why."""

    submission_id: SubmissionID = msgspec.field(name="submissionID")
    reason: str | None


class BatchView(View, frozen=True):
    """A batch: one category over the records of a file."""

    batch_id: str = msgspec.field(name="batchID")
    category: str
    state: str
    reason: str | None
    total: int
    concurrency: int
    error_policy: str
    priority: int
    created_at: float
    finished_at: float | None


class BatchStatusView(View, frozen=True):
    """`bystroq batch status`: how far a batch got."""

    batch: BatchView
    counts: dict[str, int]  # records by state, plus `pending` (not yet put)
    done: int
    percent: float
    rate_per_s: float | None
    eta_s: float | None
    failures: list[FailureView]


class TubeStatsView(View, frozen=True):
    """Jobs of one tube on one server."""

    server: str
    tube: str
    ready: int
    reserved: int
    delayed: int
    buried: int
    watching: int
    total: int


class ServerErrorView(View, frozen=True):
    """A server that did not answer, and the error."""

    server: str
    error: str


class StatsView(View, frozen=True):
    """`bystroq stats`: tube counts per server, and the servers that did not answer."""

    tubes: list[TubeStatsView]
    unreachable: list[ServerErrorView]


class PeekedJobView(View, frozen=True):
    """A job looked at on a server without taking it."""

    server: str
    queue_id: int = msgspec.field(name="queueID")
    reserves: int
    age_s: int
    body: str
    buried: int | None = None  # with `bystroq buried`: how many are buried on that server


class CountView(View, frozen=True):
    """How many jobs a command moved or deleted on one server (or why it could not)."""

    server: str
    count: int | None
    error: str | None = None


class ConsumedView(View, frozen=True):
    """What `bystroq consume` applied before it stopped."""

    applied: int
    malformed: int  # buried: not an event
    rejected: int  # buried: refused by the store
    store_outages: int
    by_event: dict[str, int]


class BatchCancelView(View, frozen=True):
    """What cancelling a batch did to its jobs."""

    batch_id: str = msgspec.field(name="batchID")
    deleted: int
    requested: int


class CancelView(View, frozen=True):
    """What a cancel did: `deleted` (it never runs) or `requested` (its worker stops it)."""

    submission_id: SubmissionID = msgspec.field(name="submissionID")
    result: str
    message: str


class HeldJobView(View, frozen=True):
    """A job a worker runs."""

    submission_id: SubmissionID | None = msgspec.field(name="submissionID")
    queue_id: int = msgspec.field(name="queueID")
    server: str


class WorkerView(View, frozen=True):
    """A worker, from its heartbeats. `state` is what it said last (running, quiet,
    stopping, stopped), or `gone` when it has been silent for three of its intervals;
    `alive` is true while it is running, quiet or stopping."""

    worker_id: str = msgspec.field(name="workerID")
    host: str
    pid: int
    category: str
    slots_busy: int
    slots_total: int
    isolation: str
    version: str
    started_at: float
    last_seen_at: float
    interval_s: float
    state: str
    alive: bool
    jobs: list[HeldJobView]


def worker_view(row: WorkerRow, now: float | None = None) -> WorkerView:
    now = time.time() if now is None else now
    silent = now - row.last_seen_at > GONE_AFTER_INTERVALS * row.interval_s
    state = row.state if row.state == "stopped" or not silent else "gone"
    return WorkerView(
        worker_id=row.worker_id, host=row.host, pid=row.pid, category=row.category,
        slots_busy=row.slots_busy, slots_total=row.slots_total, isolation=row.isolation,
        version=row.version, started_at=row.started_at, last_seen_at=row.last_seen_at,
        interval_s=row.interval_s, state=state, alive=state not in ("stopped", "gone"),
        jobs=[HeldJobView(submission_id=job.submissionID, queue_id=job.queueID,
                          server=job.server) for job in row.jobs])


def submission_view(record: Record, now: float | None = None) -> SubmissionView:
    percent = eta = None
    if record.total:
        done = record.progress + record.skipped
        percent = round(100.0 * min(done, record.total) / record.total, 1)
        elapsed = (now or time.time()) - (record.started_at or 0)
        if record.state == "started" and done and record.started_at and elapsed > 0:
            eta = round(max(record.total - done, 0) * elapsed / done, 1)
    return SubmissionView(
        submission_id=key_to_submission_id(record.submission_id), category=record.category,
        state=record.state, attempts=record.attempts, queue_id=record.queue_id,
        server=record.server, worker=record.worker, progress=record.progress,
        skipped=record.skipped, total=record.total, percent=percent, eta_s=eta,
        messages=list(record.messages), result=record.result, reason=record.reason,
        traceback=record.traceback, traceparent=record.traceparent, batch=record.batch,
        submitted_at=record.submitted_at,
        started_at=record.started_at, finished_at=record.finished_at,
        updated_at=record.updated_at, runs=len(record.prior_runs) + 1,
    )


def timeline_view(entry: TimelineEntry) -> TimelineEventView:
    return TimelineEventView(at=entry.at, event=entry.event, attempt=entry.attempt,
                             seq=entry.seq, worker=entry.worker, applied=entry.applied,
                             message=entry.body)


def status_view(record: Record, timeline: list[TimelineEntry]) -> SubmissionStatusView:
    return SubmissionStatusView(submission=submission_view(record),
                                timeline=[timeline_view(entry) for entry in timeline])


def failure_view(record: Record) -> FailureView:
    return FailureView(submission_id=key_to_submission_id(record.submission_id),
                       reason=record.reason)


_ENCODER = msgspec.json.Encoder()


def to_json(view: View | list[Any]) -> str:
    """A view (or a list of views) as one line of JSON."""
    return _ENCODER.encode(view).decode()


def batch_view(batch: Batch) -> BatchView:
    return BatchView(batch_id=batch.batch_id, category=batch.category, state=batch.state,
                     reason=batch.reason, total=batch.total, concurrency=batch.concurrency,
                     error_policy=batch.error_policy, priority=batch.priority,
                     created_at=batch.created_at, finished_at=batch.finished_at)
