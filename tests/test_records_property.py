"""A stateful property test of the records store against a plain-Python oracle.

Workers emit events for a few submissions (several runs, several attempts each); the test
delivers them late, reordered and duplicated, some with and some without `at`/`seq`/
`attempt` (a Bystro worker's), through two store connections at once, mixed with the
producer's queued records, `cancel` and `retry`. After every step each record must equal
what the oracle computes from the events delivered so far.
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bystroq.records import open_store, parse_event
from bystroq.records.model import IncomingEvent
from bystroq.records.sql import SQLStore
from tests.conftest import _postgres_schema_url

SERVER = "127.0.0.1:11300"
SUBMISSIONS = ("a", "b", "c")
ENDS = ("completed", "failed", "retrying", "cancelled")


@dataclass
class Sent:
    """An event a worker sent, and what the oracle needs to know of it."""

    sid: str
    run: int
    attempt: int
    seq: int
    kind: str
    event: IncomingEvent


@dataclass
class Job:
    """What the workers do with one submission: its runs, attempts and events."""

    bystro: bool  # events without at/seq/attempt, delivered in order
    run: int = 0
    queue_id: int = 0
    attempt: int = 1
    seq: int = 0
    finished: bool = False
    queued_recorded: bool = False


@dataclass
class Expected:
    """The oracle's record: a fold over the events delivered, in delivery order."""

    run: int = 0
    base: int = 0  # attempts of earlier runs
    attempt: int = 0  # of this run
    done: bool = False
    last_seq: int = -1
    state: str = "queued"
    progress: int = 0
    result: dict[str, Any] | None = None
    reason: str | None = None
    seen: set[str] = field(default_factory=set)

    def deliver(self, sent: Sent, dedupe: str) -> None:
        if dedupe in self.seen:
            return
        self.seen.add(dedupe)
        if sent.run != self.run or sent.attempt < self.attempt:
            return
        if sent.attempt == self.attempt and (self.done or sent.seq <= self.last_seq):
            return
        if sent.attempt > self.attempt:
            self.attempt, self.done, self.last_seq = sent.attempt, False, -1
        self.last_seq = sent.seq
        if sent.kind == "progress":
            self.state = "started" if self.state in ("queued", "retrying") else self.state
            self.progress = sent.event.body["data"]["progress"]
        else:
            self.state = sent.kind
            self.result = {"n": sent.seq} if sent.kind == "completed" else None
            self.reason = f"r{sent.seq}" if sent.kind in ("failed", "retrying") else None
        self.done = sent.kind in ENDS


class RecordsMachine(RuleBasedStateMachine):
    url: str  # set by the test function below, per backend
    queue_ids = 100

    @initialize(bystro=st.lists(st.booleans(), min_size=3, max_size=3))
    def start(self, bystro: list[bool]) -> None:
        self.stack = ExitStack()
        if self.url == "postgres":  # a schema of its own, dropped in teardown
            name = f"p_{uuid.uuid4().hex[:12]}"
            self.url = self.stack.enter_context(contextmanager(_postgres_schema_url)(name))
        self.writers: list[SQLStore] = [self.stack.enter_context(open_store(self.url))
                                        for _ in range(2)]
        self.jobs = {sid: Job(bystro=b, queue_id=next_id(self)) for sid, b in
                     zip(SUBMISSIONS, bystro, strict=True)}
        self.expected = {sid: Expected() for sid in SUBMISSIONS}
        self.in_flight: list[Sent] = []
        self.event_jobs = 0

    def teardown(self) -> None:
        if hasattr(self, "stack"):
            self.stack.close()

    # -- the workers -------------------------------------------------------------------

    @rule(sid=st.sampled_from(SUBMISSIONS), kind=st.sampled_from(
        ["started", "progress", "progress", "completed", "failed", "retrying"]))
    def emit(self, sid: str, kind: str) -> None:
        job = self.jobs[sid]
        if job.finished or (job.bystro and kind == "retrying"):
            return
        body: dict[str, Any] = {"event": kind, "submissionID": sid, "worker": "w"}
        if not job.bystro:
            body |= {"queueID": job.queue_id, "attempt": job.attempt, "seq": job.seq,
                     "at": 1000.0 + job.seq}
        if kind == "progress":
            body["data"] = {"progress": job.seq * 10 + job.attempt}
        elif kind == "completed":
            body["n"] = job.seq
        elif kind in ("failed", "retrying"):
            body["reason"] = f"r{job.seq}"
        self.event_jobs += 1
        event = parse_event(msgspec.json.encode(body), "echo", SERVER, self.event_jobs)
        self.in_flight.append(Sent(sid, job.run, job.attempt, job.seq, kind, event))
        job.seq += 1
        if kind == "retrying":
            job.attempt, job.seq = job.attempt + 1, 0
        job.finished = kind in ("completed", "failed")

    # -- delivery ----------------------------------------------------------------------

    @rule(data=st.data(), two_writers=st.booleans(), keep=st.booleans())
    def deliver(self, data: st.DataObject, two_writers: bool, keep: bool) -> None:
        """Deliver some in-flight events in any order (a Bystro job's in order); with
        `two_writers` both connections apply the same batch at once; with `keep` the
        events stay in flight and come again later (duplicates)."""
        if not self.in_flight:
            return
        picked = data.draw(st.lists(st.sampled_from(range(len(self.in_flight))),
                                    min_size=1, max_size=6, unique=True))
        picked = self._in_order_for_bystro(picked)
        batch = [self.in_flight[i] for i in picked]
        delivered = {i for i in picked if keep is False or self.jobs[self.in_flight[i].sid].bystro}
        events = [sent.event for sent in batch]
        if two_writers:
            threads = [threading.Thread(target=writer.apply_events, args=(events,))
                       for writer in self.writers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            self.writers[0].apply_events(events)
        for sent in batch:
            self.expected[sent.sid].deliver(sent, sent.event.key)
        self.in_flight = [s for i, s in enumerate(self.in_flight) if i not in delivered]

    def _in_order_for_bystro(self, picked: list[int]) -> list[int]:
        """A Bystro job's events carry no seq: each of its picks becomes its oldest event
        in flight, so they arrive in the order they were sent."""
        oldest: dict[str, list[int]] = {}
        for i, sent in enumerate(self.in_flight):
            if self.jobs[sent.sid].bystro:
                oldest.setdefault(sent.sid, []).append(i)
        out = []
        for i in picked:
            sid = self.in_flight[i].sid
            out.append(oldest[sid].pop(0) if sid in oldest else i)
        return out

    # -- the producer and the operator -------------------------------------------------

    @rule(sid=st.sampled_from(SUBMISSIONS))
    def queued(self, sid: str) -> None:
        job = self.jobs[sid]
        if not job.queued_recorded:
            self.writers[1].record_queued(sid, "echo", job.queue_id, SERVER)
            job.queued_recorded = True

    @rule(sid=st.sampled_from(SUBMISSIONS))
    def cancel(self, sid: str) -> None:
        record = self.writers[0].get(sid)
        if record is None or not self.jobs[sid].queued_recorded:
            return
        expected = self.expected[sid]
        applied = self.writers[0].record_event(sid, "cancelled", "stop")
        assert applied == (not expected.done)
        if applied:
            expected.state, expected.done, expected.reason = "cancelled", True, "stop"
            expected.result = None
            expected.last_seq += 1
        self.jobs[sid].finished = True

    @rule(sid=st.sampled_from(SUBMISSIONS))
    def retry(self, sid: str) -> None:
        """`bystroq retry`: a finished submission is put again as a new run."""
        expected, job = self.expected[sid], self.jobs[sid]
        if expected.state not in ("failed", "cancelled") or not job.queued_recorded:
            return
        self.writers[0].resubmitting(sid)
        if job.bystro:  # without a queueID, an old run's late event cannot be told apart
            self.in_flight = [sent for sent in self.in_flight if sent.sid != sid]
        self.jobs[sid] = Job(bystro=job.bystro, run=job.run + 1, queue_id=next_id(self))
        self.writers[0].record_queued(sid, "echo", self.jobs[sid].queue_id, SERVER)
        self.jobs[sid].queued_recorded = True
        base = expected.base + expected.attempt
        self.expected[sid] = Expected(run=job.run + 1, base=base, seen=expected.seen)

    # -- the property ------------------------------------------------------------------

    @invariant()
    def records_match_the_oracle(self) -> None:
        if not hasattr(self, "stack"):
            return
        for sid, expected in self.expected.items():
            record = self.writers[1].get(sid)
            if record is None:
                assert not expected.seen and not self.jobs[sid].queued_recorded
                continue
            got = (record.state, record.attempts, record.progress, record.result,
                   record.reason)
            want = (expected.state, expected.base + expected.attempt, expected.progress,
                    expected.result, expected.reason)
            assert got == want, f"{sid}: store {got} != oracle {want}"


def next_id(machine: RecordsMachine) -> int:
    """A fresh beanstalkd job id for a run."""
    machine.queue_ids += 1
    return machine.queue_ids


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def machine_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """One store per example: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/records-{{}}.db"
    else:
        yield "postgres"


def test_records_match_the_oracle(machine_url: str) -> None:
    class Machine(RecordsMachine):
        def __init__(self) -> None:
            super().__init__()
            self.url = machine_url.format(uuid.uuid4().hex)

    Machine.TestCase.settings = settings(
        max_examples=25, stateful_step_count=30, deadline=None,
        suppress_health_check=list(HealthCheck))
    Machine.TestCase().runTest()

