"""What a producer tells a records store, and what a handle reads back from it: the
SubmitRecorder protocol, the config's store as the default, one warning per store outage,
and Submitted (where a job went; `wait()` for its record)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import structlog

from bystroq.errors import (
    BystroqError,
    DuplicateSubmission,
    StoreUnavailable,
)
from bystroq.messages import key_to_submission_id, record_key
from bystroq.servers import (
    Server,
)

if TYPE_CHECKING:
    from bystroq.bulk import Bulk

# Queued records a bulk submit writes in one transaction.
RECORD_BATCH = 2048


class RecordReader(Protocol):
    """A records store, as far as a handle reads it."""

    def get(self, submission_id: str) -> Any: ...


class Submitted(msgspec.Struct, frozen=True, repr_omit_defaults=True):
    """Where a job went: its beanstalkd id (the queueID) on its server and tube.

    (A Struct, not a dataclass: a bulk submit makes one a job, and a Struct is built in a
    tenth of the time.)"""

    job_id: int
    server: Server
    tube: str
    submission_id: str | int | None
    records: RecordReader | None = None  # the store `wait()` reads

    def wait(self, timeout_s: float = 60.0, poll_s: float = 0.1) -> Any:
        """The submission's record (a records.views.SubmissionView) once it is completed,
        failed or cancelled; TimeoutError after `timeout_s`. Needs a records store (the
        producer's) and a consumer applying events to it."""
        from bystroq.records.model import FINAL_STATES
        from bystroq.records.views import submission_view

        if self.records is None or self.submission_id is None:
            raise BystroqError("this job has no record to wait for: give the Producer a "
                               "records store (recorder=, or `records:` in the config) "
                               "and the job a submissionID")
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.records.get(record_key(self.submission_id))
            if record is not None and record.state in FINAL_STATES:
                return submission_view(record)
            if time.monotonic() >= deadline:
                state = record.state if record is not None else "not recorded yet"
                raise TimeoutError(f"submission {self.submission_id!r} is still {state} "
                                   f"after {timeout_s} s")
            time.sleep(poll_s)


# How long a unique submit's claim outlives the wait for a server (should its producer die
# between the claim and the queued record, the id is free again after this).
UNIQUE_HOLD_S = 30.0


@contextmanager
def unique_claims(recorder: object, submission_ids: Sequence[str | int | None],
                  hold_s: float) -> Iterator[None]:
    """Hold the submission ids of a unique submit while its jobs are put and recorded:
    DuplicateSubmission when one is still queued or running (nothing is put then)."""
    claim = getattr(recorder, "claim_submits", None)
    release = getattr(recorder, "release_submits", None)
    if claim is None or release is None:
        raise BystroqError("unique submits need a records store: set `records:` in the "
                           "config (or give the Producer a recorder), or submit without "
                           "unique")
    if any(sid is None for sid in submission_ids):
        raise BystroqError("a unique submit needs every job's submissionID")
    keys = [record_key(sid) for sid in submission_ids if sid is not None]
    try:
        refused: dict[str, str] = claim(keys, hold_s)
    except StoreUnavailable as exc:
        raise BystroqError(f"cannot check that the submission is not already queued or "
                           f"running: {exc}; try again once the records store is back, or "
                           f"submit without unique") from exc
    if refused:
        key, why = next(iter(refused.items()))
        sid = key_to_submission_id(key)
        more = f" (and {len(refused) - 1} more of these jobs)" if len(refused) > 1 else ""
        raise DuplicateSubmission(
            f"submission {sid!r} is already {why}{more}: nothing was submitted; wait for "
            f"it to finish or cancel it (`bystroq cancel {sid}`), or submit without unique")
    try:
        yield
    finally:
        with suppress(Exception):  # a claim left behind expires after hold_s
            release(keys)


class FromConfig:
    """The default recorder: the config's `records:` store, if it names one."""


FROM_CONFIG = FromConfig()


class SubmitRecorder(Protocol):
    """What the producer tells a records store (see bystroq.records)."""

    def record_queued(
        self, submission_id: str, category: str, queue_id: int, server: str,
        batch: str | None = None, at: float | None = None, body: bytes | None = None,
    ) -> Any: ...

    def record_submit_failed(self, submission_id: str, category: str, reason: str) -> Any: ...

    def record_submit_unknown(
        self, submission_id: str, category: str, server: str, reason: str, sent_at: float,
        batch: str | None = None, body: bytes | None = None,
    ) -> Any: ...


class RecorderHealth:
    """Writes to the records store without ever failing a submit: the job is in (or its
    put's own error is raised) whatever the store does. An outage is logged once when it
    starts and once when it ends, not once per job; records missed meanwhile are created
    by the events consumer from the jobs' events."""

    def __init__(self, recorder: SubmitRecorder | None) -> None:
        self.store = getattr(recorder, "url", type(recorder).__name__)  # for the log
        self._down_since: float | None = None
        self._missed = 0
        self._lock = threading.Lock()
        self.log = structlog.get_logger("bystroq.producer")

    def write(self, record: Callable[[], object]) -> None:
        """Call `record` (one write to the store); whatever it raises is logged."""
        try:
            record()
        except Exception as exc:
            self._failed(exc)
        else:
            self._succeeded()

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
            self._missed += 1
        if first:
            self.log.warning(
                "records store unavailable: jobs are still put and their records will be "
                "written by the events consumer; check the database",
                store=self.store,
                error=str(exc) or type(exc).__name__)

    def _succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, missed = self._down_since, self._missed
            self._down_since, self._missed = None, 0
        if since is not None:
            self.log.info("records store available again", down_s=round(
                time.monotonic() - since, 3), records_missed=missed)


class BulkRecords:
    """The records of a bulk submit's jobs, written as the fate of each chunk is known:
    queued ones RECORD_BATCH at a time in one write, unknown ones one by one (rare).

    The writes run on a thread of their own while the puts go on (the database works
    while the servers do); `finish()` waits for the last of them, so every job put has
    its record when the submit returns."""

    def __init__(self, recorder: SubmitRecorder | None, health: RecorderHealth,
                 category: str, ids: Sequence[str | int | None], bodies: Sequence[bytes],
                 batch: str | None) -> None:
        self.recorder, self.health, self.category = recorder, health, category
        self.ids, self.bodies, self.batch = ids, bodies, batch
        self._pending: list[int] = []
        self._parts: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def settled(self, bulk: Bulk, part: Sequence[int]) -> None:
        """The jobs `part` are in, unknown or not put: record them (in a while)."""
        if self.recorder is not None:
            self._pending += part
            if len(self._pending) >= RECORD_BATCH:
                self._hand_off(bulk)

    def finish(self, bulk: Bulk) -> None:
        """Write what is pending, and wait until every record is written."""
        self._hand_off(bulk)
        if self._writer is not None:
            self._parts.put(None)
            self._writer.join()
            self._writer = None

    def _hand_off(self, bulk: Bulk) -> None:
        part, self._pending = self._pending, []
        if not part:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_all, args=(bulk,),
                                            name="bystroq-records", daemon=True)
            self._writer.start()
        self._parts.put(part)

    def _write_all(self, bulk: Bulk) -> None:
        while (part := self._parts.get()) is not None:
            self._write(bulk, part)

    def _write(self, bulk: Bulk, part: list[int]) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        ids, bodies, job_ids, servers = self.ids, self.bodies, bulk.job_ids, bulk.servers
        names: dict[Server | None, str] = {}
        rows = [(record_key(sid), job_id, names.get(server) or names.setdefault(
                    server, str(server)), bodies[i])
                for i in part
                if (job_id := job_ids[i]) is not None and (sid := ids[i]) is not None
                and (server := servers[i]) is not None]
        many = getattr(recorder, "record_queued_many", None)
        if rows and many is not None:
            self.health.write(partial(many, self.category, rows, batch=self.batch))
        else:
            for key, job_id, server_name, body in rows:
                self.health.write(partial(recorder.record_queued, key, self.category, job_id,
                                          server_name, batch=self.batch, body=body))
        for i in part:
            lost, sid = bulk.lost_at.get(i), ids[i]
            if lost is not None and sid is not None:
                lost_on, sent_at, reason = lost
                self.health.write(partial(
                    recorder.record_submit_unknown, record_key(sid), self.category,
                    lost_on.name, reason, sent_at, batch=self.batch, body=bodies[i]))
