"""Submits from many concurrent requests, put together by one writer thread.

Each `POST /v1/submissions/{category}` hands its checked job to the `Submitter` and awaits
its own outcome. While the writer thread puts one group, the jobs of requests that arrive
meanwhile wait; the next group is all of them, put with `Producer.submit_many`: pipelined
puts and the queued records in one transaction, so under load a round trip to beanstalkd
and a commit of the store are shared by many requests, and a lone request goes at once.
The event loop never waits on a server or the store.

Each job keeps the outcome it would have had alone: its own queueID and record, or its own
error (ServersUnavailable: not put; SubmitOutcomeUnknown: sent, never answered; JobTooBig),
and an error of one job never fails another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from bystroq.errors import (
    JobTooBig,
    ServersUnavailable,
    SubmitIncomplete,
    SubmitOutcomeUnknown,
)
from bystroq.messages import record_key
from bystroq.producer import Producer, Submitted
from bystroq.tracing import with_traceparent

# Jobs put in one group at most: the requests of one group answer together.
MAX_GROUP = 256

Outcome = Submitted | Exception


@dataclass
class _Job:
    category: str
    body: bytes
    submission_id: str | int | None
    future: asyncio.Future[Submitted] = field(repr=False)


class Submitter:
    """Puts the jobs of concurrent requests in groups, one group at a time."""

    def __init__(self, producer: Callable[[], Producer]) -> None:
        self._producer = producer
        self._pending: list[_Job] = []
        self._drain: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None  # started by the first submit
        self.groups = 0  # groups put so far
        self._log = structlog.get_logger("bystroq.web")

    async def submit(self, category: str, body: bytes,
                     submission_id: str | int | None) -> Submitted:
        """Put one job (already checked) on `category`'s submission tube; where it went,
        or the error `Producer.submit` would have raised."""
        future: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        # The request's trace context is read here: the writer thread has none.
        self._pending.append(_Job(category, with_traceparent(body), submission_id, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._put_pending())
        # Shielded: a client that goes away does not cancel a put that may be under way.
        return await asyncio.shield(future)

    async def _put_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="bystroq-web-submit")
            thread = self._thread
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            try:
                outcomes = await loop.run_in_executor(thread, self._put, group)
            except Exception as exc:  # not one job's error: every job of the group gets it
                outcomes = [exc] * len(group)
            except BaseException:  # the app is stopping
                for job in group + self._pending:
                    job.future.cancel()
                self._pending = []
                raise
            for job, outcome in zip(group, outcomes, strict=True):
                _settle(job, outcome)

    def _put(self, group: list[_Job]) -> list[Outcome]:
        """In the writer thread: each job's handle or error, in order."""
        producer = self._producer()
        self.groups += 1
        outcomes: list[Outcome | None] = [None] * len(group)
        by_category: dict[str, list[int]] = {}
        for index, job in enumerate(group):
            by_category.setdefault(job.category, []).append(index)
        for category, indices in by_category.items():
            jobs = [group[i] for i in indices]
            for i, outcome in zip(indices, self._put_category(producer, category, jobs),
                                  strict=True):
                outcomes[i] = outcome
        return [o if o is not None else RuntimeError("no outcome") for o in outcomes]

    def _put_category(self, producer: Producer, category: str,
                      jobs: list[_Job]) -> list[Outcome]:
        if len(jobs) == 1:
            return [_alone(producer, category, jobs[0])]
        try:
            return list(producer.submit_many(category, [job.body for job in jobs]))
        except JobTooBig:  # nothing was put: each job alone, with its own answer
            return [_alone(producer, category, job) for job in jobs]
        except SubmitIncomplete as exc:
            return [self._incomplete(producer, category, exc, i, job)
                    for i, job in enumerate(jobs)]
        except Exception as exc:
            return [exc] * len(jobs)

    def _incomplete(self, producer: Producer, category: str, exc: SubmitIncomplete,
                    index: int, job: _Job) -> Outcome:
        """One job's outcome in a group cut part-way (its records are written then)."""
        handle = exc.submitted[index]
        if isinstance(handle, Submitted):
            return handle
        what = "the job" if job.submission_id is None else f"submission {job.submission_id!r}"
        if index in exc.unknown:
            return SubmitOutcomeUnknown(
                f"the server did not answer the put of {what} within {producer.wait_s:g} s; "
                "it may still run: do not submit it again, follow its record (state "
                "unknown) or events")
        reason = (f"no server took {what} within {producer.wait_s:g} s; nothing was put, "
                  "submitting it again is safe")
        self._record_failed(producer, category, job, reason)
        return ServersUnavailable(reason)

    def _record_failed(self, producer: Producer, category: str, job: _Job,
                       reason: str) -> None:
        """What `Producer.submit` writes for a job no server took; a store that fails is
        logged (the answer to the request says what happened)."""
        recorder = producer.recorder
        if recorder is None or job.submission_id is None:
            return
        try:
            recorder.record_submit_failed(record_key(job.submission_id),
                                          producer.config.category_name(category),
                                          f"submit failed: {reason}")
        except Exception as exc:
            self._log.warning("could not record a failed submit", error=str(exc))

    def close(self) -> None:
        """Wait for the group being put, then stop the writer thread (a later submit
        starts another)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)


def _alone(producer: Producer, category: str, job: _Job) -> Outcome:
    try:
        return producer.submit(category, job.body)
    except Exception as exc:
        return exc


def _settle(job: _Job, outcome: Outcome) -> None:
    if job.future.done():
        return
    if isinstance(outcome, Submitted):
        job.future.set_result(outcome)
    else:
        job.future.set_exception(outcome)
        job.future.exception()  # marked as read: a request that went away never reads it
