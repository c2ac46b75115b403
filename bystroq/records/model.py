"""Submission records and the pure state machine that applies events to them.

Every rule lives in `apply`; the stores only load records, call it, and write back.
Events may arrive twice, late or out of order:
- a duplicate (same server and body) is dropped before it reaches `apply`;
- an event of an older attempt, or of an earlier run (before `bystroq retry` submitted
  the job again), is logged but changes nothing;
- within one attempt, nothing after the attempt's terminal event changes the record,
  and an event older (by `seq`) than the last applied one changes nothing;
- an event for an unknown submission creates its record;
- a record whose last put was never answered (state `unknown`, no queueID) adopts the
  first run whose events arrive, as a queued record without a queueID does.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Literal, get_args

import msgspec

from bystroq.errors import DecodeError
from bystroq.messages import Event, canonical, record_key

# `unknown`: a put was sent but never answered; the job may be on its server or not. Like
# `queued` it is not final: the job's events, if it arrives, move the record on.
State = Literal["queued", "unknown", "started", "retrying", "completed", "failed", "cancelled"]
STATES: tuple[str, ...] = get_args(State)
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
# Waiting for a job to start: no event of the current run has been applied yet.
WAITING_STATES = frozenset({"queued", "unknown"})
# Not final: put (or maybe put) and not finished, in the order a job moves through them.
ACTIVE_STATES: tuple[str, ...] = ("queued", "unknown", "started", "retrying")
# Events that end an attempt: nothing of the same attempt applies after them.
ENDS_ATTEMPT = frozenset({"completed", "failed", "cancelled", "retrying"})
EVENTS = frozenset(event.value for event in Event)
KEPT_MESSAGES = 5
# Fields every event may carry; the rest of a completed event is its result.
EVENT_FIELDS = frozenset({"event", "submissionID", "queueID", "attempt", "worker", "at", "seq",
                          "traceparent"})
# The largest number each counted field may hold (the columns are 32 and 64-bit integers;
# attempts leave room for the attempts of earlier runs).
LIMITS = {"queueID": 2**63 - 1, "attempt": 2**30, "seq": 2**31 - 1, "progress": 2**63 - 1,
          "skipped": 2**63 - 1, "total": 2**63 - 1}


class Record(msgspec.Struct, kw_only=True):
    """One submission, as the events left it."""

    submission_id: str
    category: str
    state: State = "queued"
    attempts: int = 0
    queue_id: int | None = None
    server: str | None = None
    worker: str | None = None
    progress: int = 0
    skipped: int = 0
    messages: list[str] = msgspec.field(default_factory=list)
    result: dict[str, Any] | None = None
    reason: str | None = None
    batch: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    # Bookkeeping for `apply` (not shown by the CLI):
    run_base: int = 0  # attempts made by earlier runs (jobs put before a `bystroq retry`)
    attempt_done: bool = False  # the current attempt's terminal event was applied
    seq: int = -1  # seq of the last applied event of the current attempt
    prior_runs: list[str] = msgspec.field(default_factory=list)  # "server/queueID" of old runs
    body: str | None = None  # the job as submitted, for `bystroq retry`
    total: int | None = None  # how much work the handler said there is (progress of total)
    traceback: str | None = None  # of the last failure, when the worker sent one
    traceparent: str | None = None  # W3C trace context the job was submitted in (bystroq.tracing)

    @property
    def run(self) -> str | None:
        return run_key(self.server, self.queue_id)


class IncomingEvent(msgspec.Struct, kw_only=True, frozen=True):
    """An event read from an events tube, with where it came from."""

    key: str  # identifies a duplicate: the same body from the same server
    event: str
    submission_id: str | None  # None for a job that could not be decoded (queueID only)
    category: str
    server: str
    queue_id: int | None
    attempt: int | None
    seq: int | None
    worker: str | None
    at: float
    body: dict[str, Any]


class TimelineEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One event as the store logged it, and whether it changed the record."""

    at: float
    event: str
    attempt: int | None
    seq: int | None
    worker: str | None
    applied: bool
    body: dict[str, Any]


def run_key(server: str | None, queue_id: int | None) -> str | None:
    return None if server is None or queue_id is None else f"{server}/{queue_id}"


def orphan_id(server: str, queue_id: int) -> str:
    """The record id of an undecodable job that no queued record claims."""
    return f"?{server}/{queue_id}"


_DECODE = msgspec.json.Decoder(dict[str, Any])


class _Envelope(msgspec.Struct, frozen=True):
    """The fields of an event every rule relies on, checked by msgspec (others are kept
    in the body as they came; `attempt`, `seq`, `worker` and `at` are used when valid)."""

    event: Event
    submissionID: str | int | None = None
    queueID: int | None = None


def parse_event(
    body: bytes, category: str, server: str, event_job_id: int | None = None,
) -> IncomingEvent:
    """Decode one event body (ids spelled `submissionID` or `submissionId`); DecodeError
    says what was wrong.

    `event_job_id` is the event's own job id on the events tube: an event that carries
    neither `at` nor `seq` (a Bystro worker's) is told from a later run's identical event
    by it, while a redelivery of the same event job is still a duplicate."""
    try:
        data = canonical(_DECODE.decode(body))  # Bystro's camelCase is read the same
        envelope = msgspec.convert(data, _Envelope)
    except msgspec.ValidationError as exc:  # (a DecodeError too: first)
        raise DecodeError(f"event: {exc}") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise DecodeError(f"event is not a JSON object: {exc}") from None
    event = envelope.event.value
    submission_id, queue_id = envelope.submissionID, envelope.queueID
    if submission_id is None and (event != "failed" or queue_id is None):
        raise DecodeError("expected `submissionID` (or, on a failed event, `queueID`)")
    if isinstance(submission_id, str) and ("\x00" in submission_id or not submission_id):
        raise DecodeError("field `submissionID`: expected a non-empty string without NUL")
    _check_ranges(data)
    identity = server.encode() + b"\n" + body
    if "at" not in data and "seq" not in data and event_job_id is not None:
        identity += b"\n%d" % event_job_id
    return IncomingEvent(
        key=hashlib.blake2b(identity, digest_size=16).hexdigest(),
        event=event,
        submission_id=None if submission_id is None else record_key(submission_id),
        category=category,
        server=server,
        queue_id=queue_id,
        attempt=_int(data, "attempt"),
        seq=_int(data, "seq"),
        worker=data.get("worker") if isinstance(data.get("worker"), str) else None,
        at=_at(data.get("at")),
        body=data,
    )


def _check_ranges(data: dict[str, Any]) -> None:
    """Numbers a store could not hold are refused here, not by the database."""
    progress = data.get("data")
    for name, limit in LIMITS.items():
        holder = progress if name in ("progress", "skipped", "total") else data
        value = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= limit:
            where = f"data.{name}" if holder is progress else name
            raise DecodeError(f"field `{where}`: expected an integer from 0 to {limit}, "
                              f"got {value}")


def _at(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            at = float(value)
        except OverflowError:
            return time.time()
        if math.isfinite(at):
            return at
    return time.time()


def _int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def new_record(event: IncomingEvent, submission_id: str) -> Record:
    """The record an event creates when its submission is unknown."""
    return Record(submission_id=submission_id, category=event.category,
                  queue_id=event.queue_id, server=event.server)


def apply(record: Record, event: IncomingEvent, now: float) -> bool:
    """Apply `event` to `record` in place; False when it changed nothing (only logged)."""
    run = run_key(event.server, event.queue_id)
    if run is not None and run != record.run:
        if record.queue_id is not None or run in record.prior_runs:
            return False  # an earlier run's event, or another job's
        record.queue_id, record.server = event.queue_id, event.server  # adopt the new run
    current = record.attempts - record.run_base
    attempt = record.run_base + (event.attempt if event.attempt is not None else max(current, 1))
    if attempt < record.attempts:
        return False
    if attempt == record.attempts and (
        record.attempt_done or (event.seq is not None and event.seq <= record.seq)
    ):
        return False
    if attempt > record.attempts:
        record.attempts, record.attempt_done, record.seq = attempt, False, -1
    record.seq = event.seq if event.seq is not None else record.seq + 1
    record.updated_at = now
    last_worker = record.worker
    if event.worker is not None:
        record.worker = event.worker
    traceparent = event.body.get("traceparent")
    if isinstance(traceparent, str):
        record.traceparent = traceparent
    _EFFECTS[event.event](record, event)
    if event.body.get("gaveUp") and last_worker and record.reason:
        # The worker that gave up never ran the job; the record knows who last did.
        record.reason = f"{record.reason}; last seen on worker {last_worker}"
    if event.event in ENDS_ATTEMPT:
        record.attempt_done = True
    return True


def _started(record: Record, event: IncomingEvent) -> None:
    record.state = "started"
    record.started_at = event.at
    record.reason = record.traceback = None


def _progress(record: Record, event: IncomingEvent) -> None:
    if record.state in WAITING_STATES or record.state == "retrying":
        if record.state == "unknown":
            record.reason = None  # the put's outcome is known now: the job runs
        record.state = "started"
    data = event.body.get("data")
    if isinstance(data, dict):
        record.progress = _count(data, "progress", record.progress)
        record.skipped = _count(data, "skipped", record.skipped)
        total = data.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            record.total = total
    elif isinstance(data, str):
        record.messages = [*record.messages, data][-KEPT_MESSAGES:]


def _count(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name)
    return value if isinstance(value, int) else default


def _completed(record: Record, event: IncomingEvent) -> None:
    record.state = "completed"
    record.finished_at = event.at
    record.reason = None
    record.result = {k: v for k, v in event.body.items() if k not in EVENT_FIELDS}


def _ended(state: State) -> Any:
    def effect(record: Record, event: IncomingEvent) -> None:
        record.state = state
        reason = event.body.get("reason")
        record.reason = str(reason) if reason is not None else None
        traceback = event.body.get("traceback")
        record.traceback = traceback if isinstance(traceback, str) else None
        if state in FINAL_STATES:
            record.finished_at = event.at

    return effect


_EFFECTS = {
    "started": _started,
    "progress": _progress,
    "completed": _completed,
    "failed": _ended("failed"),
    "retrying": _ended("retrying"),
    "cancelled": _ended("cancelled"),
}


def queued(record: Record, queue_id: int, server: str, at: float) -> None:
    """The producer put the job as (server, queue_id): a new run unless it is this run."""
    if run_key(server, queue_id) != record.run:
        if record.run is not None:  # the submission is put again as another job
            record.prior_runs = [*record.prior_runs, record.run]
            start_new_run(record, at)
        elif (record.state in FINAL_STATES and record.attempts == record.run_base) or (
                record.state == "unknown"):
            start_new_run(record, at)  # an earlier put failed (no attempt ran), or was unanswered
        # Otherwise the job's events (without a queueID) came first: this is their run.
        record.queue_id, record.server = queue_id, server
    record.submitted_at = record.submitted_at or at
    record.updated_at = record.updated_at or at


def outcome_unknown(record: Record, server: str, sent_at: float, reason: str, now: float,
                    ) -> bool:
    """A put to `server`, sent at `sent_at`, was never answered: the record waits, as
    `unknown`, for the job's events (the next run seen from `server` is adopted by
    `apply`). False when that put's own events came first: they already tell the outcome.
    Those are told from an earlier run's by time (events applied after `sent_at`), so the
    clocks of producers and consumers must agree to well within the time a job takes.
    """
    if record.run is not None and record.server == server and (
        record.updated_at or 0.0) >= sent_at:
        return False  # e.g. started or completed by the job this put sent
    if record.run is None and record.state not in FINAL_STATES | WAITING_STATES:
        return False  # moved by events that carry no queueID, after the put was sent
    if record.run is not None:  # the submission was put before: that run is over for it
        record.prior_runs = [*record.prior_runs, record.run]
    if record.run is not None or record.state in FINAL_STATES:
        start_new_run(record, now)
    record.state, record.reason = "unknown", reason
    record.server, record.queue_id = server, None
    record.submitted_at = record.submitted_at or sent_at
    record.updated_at = now
    return True


def resubmitting(record: Record, at: float) -> None:
    """`bystroq retry` is about to put the job again: events of the old run stop applying."""
    if record.run is not None:
        record.prior_runs = [*record.prior_runs, record.run]
    record.queue_id = record.server = None
    start_new_run(record, at)


def start_new_run(record: Record, at: float) -> None:
    """Reset what the last run left: the job is submitted again as a new attempt."""
    record.run_base = record.attempts
    record.state, record.attempt_done, record.seq = "queued", False, -1
    record.reason = record.result = record.finished_at = record.started_at = None
    record.progress = record.skipped = 0
    record.total = record.traceback = None
    record.messages = []
    record.submitted_at = record.updated_at = at
