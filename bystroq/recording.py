"""What a producer tells a records store, and what a handle reads back from it: the
SubmitRecorder protocol, the config's store as the default, one warning per store outage,
and Submitted (where a job went; `wait()` for its record)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class RecordReader(Protocol):
    """A records store, as far as a handle reads it."""

    def get(self, submission_id: str) -> Any: ...


@dataclass(frozen=True)
class Submitted:
    """Where a job went: its beanstalkd id (the queueID) on its server and tube."""

    job_id: int
    server: Server
    tube: str
    submission_id: str | int | None
    records: RecordReader | None = field(default=None, compare=False, repr=False)

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
