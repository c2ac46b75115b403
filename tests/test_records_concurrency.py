"""Records stay right with several writers at once (separate connections, real databases)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import msgspec

from bystroq.records import open_store, parse_event
from bystroq.records.model import IncomingEvent

SERVER = "127.0.0.1:11300"


def _event(kind: str, sid: str, seq: int) -> IncomingEvent:
    body = {"event": kind, "submissionID": sid, "queueID": int(sid[1:]), "attempt": 1,
            "seq": seq, "worker": "w1", "at": 1000.0 + seq}
    return parse_event(msgspec.json.encode(body), "echo", SERVER)


def _run_all(*targets: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the test below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_producer_and_two_consumers_never_lose_an_update(records_url: str) -> None:
    """A recording producer and two consumers write the same records at once; every record
    ends as its events say (completed), none stays queued or started."""
    ids = [f"s{n}" for n in range(1, 1201)]
    open_store(records_url).close()  # schema first, so the writers race on records only
    rng = random.Random(7)
    started = [_event("started", sid, 0) for sid in ids]
    completed = [_event("completed", sid, 1) for sid in ids]
    halves = [completed[0::2], completed[1::2]]
    for half in halves:
        rng.shuffle(half)

    def producer() -> None:
        with open_store(records_url) as store:
            for sid in ids:
                store.record_queued(sid, "echo", int(sid[1:]), SERVER)

    def consumer(events: list[IncomingEvent]) -> Callable[[], None]:
        def run() -> None:
            with open_store(records_url) as store:
                for start in range(0, len(events), 20):
                    store.apply_events(events[start:start + 20])
        return run

    # Both consumers also see every started event (duplicates across consumers).
    _run_all(producer, consumer(started + halves[0]), consumer(started[::-1] + halves[1]))
    with open_store(records_url) as store:
        wrong = [r.submission_id for r in store.list(limit=10_000) if r.state != "completed"]
        assert store.count_by_state() == {"completed": len(ids)}, wrong[:10]
        assert all(len(store.timeline(sid)) == 2 for sid in ids[:50])
