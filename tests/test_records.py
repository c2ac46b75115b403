"""The records store and its state machine, on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bystroq.errors import DecodeError
from bystroq.records import parse_event
from bystroq.records.model import orphan_id
from bystroq.records.sql import SQLStore

SERVER = "127.0.0.1:11300"


def event(kind: str, sid: str | None = "s1", queue_id: int | None = 7, attempt: int = 1,
          seq: int = 0, server: str = SERVER, **extra: Any) -> Any:
    body: dict[str, Any] = {"event": kind, "queueID": queue_id, "attempt": attempt,
                            "seq": seq, "worker": "w1", "at": 1000.0 + attempt * 10 + seq}
    if sid is not None:
        body["submissionID"] = sid
    return parse_event(msgspec.json.encode({**body, **extra}), "echo", server)


def test_happy_path_and_result(store: SQLStore) -> None:
    store.record_queued("s1", "echo", 7, SERVER, body=b'{"submissionID": "s1"}')
    assert store.get("s1") is not None and store.get("s1").state == "queued"  # type: ignore
    applied = store.apply_events([
        event("started"),
        event("progress", seq=1, data={"progress": 10, "skipped": 1}),
        event("progress", seq=2, data="halfway"),
        event("completed", seq=3, message="hi", records=5),
    ])
    assert applied == 4
    record = store.get("s1")
    assert record is not None
    assert (record.state, record.attempts, record.progress, record.skipped) == (
        "completed", 1, 10, 1)
    assert record.messages == ["halfway"]
    assert record.result == {"message": "hi", "records": 5}
    assert record.worker == "w1" and record.finished_at == 1013.0
    assert [e.event for e in store.timeline("s1")] == [
        "started", "progress", "progress", "completed"]


def test_a_duplicate_changes_nothing(store: SQLStore) -> None:
    started, progress = event("started"), event("progress", seq=1, data={"progress": 3})
    assert store.apply_events([started, progress]) == 2
    before = store.get("s1")
    assert store.apply_events([started, progress, progress]) == 0
    assert store.get("s1") == before
    assert len(store.timeline("s1")) == 2


def test_progress_after_the_terminal_event_is_logged_not_applied(store: SQLStore) -> None:
    store.apply_events([event("started"), event("completed", seq=5),
                        event("progress", seq=3, data={"progress": 99})])
    record = store.get("s1")
    assert record is not None and record.state == "completed" and record.progress == 0
    timeline = store.timeline("s1")
    assert [(e.event, e.applied) for e in timeline] == [
        ("started", True), ("progress", False), ("completed", True)]


def test_out_of_order_within_an_attempt(store: SQLStore) -> None:
    store.apply_events([event("progress", seq=2, data={"progress": 20})])
    store.apply_events([event("progress", seq=1, data={"progress": 10}), event("started")])
    record = store.get("s1")
    assert record is not None and record.state == "started" and record.progress == 20


def test_an_older_attempt_never_overwrites_a_newer_one(store: SQLStore) -> None:
    store.apply_events([event("started", attempt=2), event("completed", attempt=2, seq=1)])
    store.apply_events([event("failed", attempt=1, seq=1, reason="boom")])
    record = store.get("s1")
    assert record is not None and record.state == "completed" and record.attempts == 2
    assert record.reason is None


def test_retrying_then_a_new_attempt(store: SQLStore) -> None:
    store.apply_events([event("started"), event("retrying", seq=1, reason="flaky", delay_s=1)])
    record = store.get("s1")
    assert record is not None and (record.state, record.reason) == ("retrying", "flaky")
    store.apply_events([event("started", attempt=2), event("completed", attempt=2, seq=1)])
    record = store.get("s1")
    assert record is not None and (record.state, record.attempts) == ("completed", 2)


def test_giving_up_names_the_worker_last_seen(store: SQLStore) -> None:
    store.apply_events([event("started", attempt=3)])
    gave_up = event("failed", attempt=4, worker="w2", reason="gave up after 3 attempts",
                    gaveUp=True)
    store.apply_events([gave_up])
    record = store.get("s1")
    assert record is not None and record.worker == "w2"
    assert record.reason == "gave up after 3 attempts; last seen on worker w1"


def test_an_unknown_submission_gets_a_record(store: SQLStore) -> None:
    store.apply_events([event("completed", sid="new", seq=1)])
    record = store.get("new")
    assert record is not None and record.state == "completed" and record.category == "echo"
    assert (record.queue_id, record.server) == (7, SERVER)


def test_an_invalid_job_is_matched_by_queue_id_and_server(store: SQLStore) -> None:
    store.record_queued("s9", "echo", 41, SERVER)
    store.record_queued("other", "echo", 41, "127.0.0.2:11300")
    store.apply_events([event("failed", sid=None, queue_id=41, reason="bad body")])
    record = store.get("s9")
    assert record is not None and (record.state, record.reason) == ("failed", "bad body")
    other = store.get("other")
    assert other is not None and other.state == "queued"


def test_an_unmatched_invalid_job_is_an_orphan_until_claimed(store: SQLStore) -> None:
    store.apply_events([event("failed", sid=None, queue_id=50, reason="bad body")])
    orphan = store.get(orphan_id(SERVER, 50))
    assert orphan is not None and orphan.state == "failed"
    assert orphan in store.list(state="failed")
    # The producer's record arrives late: it takes over the orphan's outcome.
    store.record_queued("late", "echo", 50, SERVER)
    assert store.get(orphan_id(SERVER, 50)) is None
    record = store.get("late")
    assert record is not None and (record.state, record.reason) == ("failed", "bad body")
    assert [e.event for e in store.timeline("late")] == ["failed"]


def test_events_before_the_queued_record(store: SQLStore) -> None:
    store.apply_events([event("started")])
    store.record_queued("s1", "echo", 7, SERVER, batch="b1")
    record = store.get("s1")
    assert record is not None and record.state == "started" and record.batch == "b1"


def test_a_resubmitted_run_ignores_the_old_runs_events(store: SQLStore) -> None:
    store.record_queued("s1", "echo", 7, SERVER)
    store.apply_events([event("started"), event("failed", seq=1, reason="boom")])
    store.resubmitting("s1")
    # The new job's started event can arrive before the producer records its queueID.
    store.apply_events([event("started", queue_id=8)])
    store.record_queued("s1", "echo", 8, SERVER)
    store.apply_events([event("progress", queue_id=7, seq=9, data={"progress": 5})])
    record = store.get("s1")
    assert record is not None
    assert (record.state, record.queue_id, record.attempts, record.progress) == (
        "started", 8, 2, 0)
    store.apply_events([event("completed", queue_id=8, seq=1)])
    record = store.get("s1")
    assert record is not None and record.state == "completed" and record.reason is None


def test_submit_failed_says_why(store: SQLStore) -> None:
    store.record_submit_failed("s2", "echo", "submit failed: no server")
    record = store.get("s2")
    assert record is not None and (record.state, record.reason) == (
        "failed", "submit failed: no server")


def test_list_filters_and_counts(store: SQLStore) -> None:
    for i in range(5):
        store.record_queued(f"q{i}", "echo", 100 + i, SERVER, batch="b" if i < 3 else None)
    store.apply_events([event("completed", sid="q0", queue_id=100)])
    assert {r.submission_id for r in store.list(batch="b")} == {"q0", "q1", "q2"}
    assert [r.submission_id for r in store.list(state="completed")] == ["q0"]
    assert len(store.list(limit=2)) == 2
    assert store.count_by_state("b") == {"completed": 1, "queued": 2}


def test_reopening_keeps_records_and_schema(records_url: str) -> None:
    from bystroq.records import open_store

    with open_store(records_url) as first:
        first.record_queued("keep", "echo", 1, SERVER)
    with open_store(records_url) as second:
        assert second.get("keep") is not None


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"event": "weird", "submissionID": 1}',
                                  b'{"event": "started"}', b'{"event": "completed", '
                                  b'"submissionID": 1, "queueID": "x"}'])
def test_malformed_events_are_refused(body: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_event(body, "echo", SERVER)


def test_bystro_events_of_a_retried_run_are_not_taken_for_duplicates(store: SQLStore) -> None:
    """A Bystro worker's events carry no at, seq or attempt: after a retry that fails the
    same way, the new failed event has the same body as the old one, yet it is new."""
    failed = msgspec.json.encode({"event": "failed", "submissionID": "b1", "reason": "boom"})
    store.record_queued("b1", "echo", 11, SERVER)
    assert store.apply_events([parse_event(failed, "echo", SERVER, event_job_id=500)]) == 1
    # Redelivered (the consumer died before deleting it): the same event job, a duplicate.
    assert store.apply_events([parse_event(failed, "echo", SERVER, event_job_id=500)]) == 0
    store.resubmitting("b1")
    store.record_queued("b1", "echo", 12, SERVER)
    assert store.get("b1").state == "queued"  # type: ignore[union-attr]
    assert store.apply_events([parse_event(failed, "echo", SERVER, event_job_id=501)]) == 1
    record = store.get("b1")
    assert record is not None and (record.state, record.attempts) == ("failed", 2)
