"""Queued records written many at once (a bulk submit's): the same records as one at a
time, on both backends, whether the record is new, known from events, orphaned or put
twice in one go."""

from __future__ import annotations

from typing import Any

import msgspec

from bystroq.records import parse_event
from bystroq.records.model import Record, orphan_id, queued
from bystroq.records.rows import new_queued_row, record_row
from bystroq.records.sql import SQLStore

AT = 1_000.0


def _event(kind: str, sid: str | None, queue_id: int, server: str, **extra: Any) -> Any:
    body: dict[str, Any] = {"event": kind, "queueID": queue_id, "attempt": 1, "seq": 0,
                            "worker": "w1", "at": 990.0}
    if sid is not None:
        body["submissionID"] = sid
    return parse_event(msgspec.json.encode({**body, **extra}), "echo", server)


def test_a_new_records_row_is_what_the_state_machine_makes() -> None:
    record = Record(submission_id="s\x00 1", category="echo")
    queued(record, 17, "127.0.0.1:11300", AT)
    record.batch, record.body = "b1", '{"submissionID": "s 1"}'
    assert new_queued_row("s\x00 1", "echo", 17, "127.0.0.1:11300", "b1", AT,
                          '{"submissionID": "s 1"}') == record_row(record)


def _situations(store: SQLStore, server: str, tag: str
                ) -> list[tuple[str, int, str, bytes | None]]:
    """Records in each situation a queued record meets, for jobs put on `server`."""
    store.apply_events([_event("started", f"early{tag}", 2, server)])  # events came first
    store.record_queued(f"again{tag}", "echo", 3, server)  # put before, as another job
    store.apply_events([_event("failed", None, 4, server, reason="bad body")])  # an orphan
    return [(f"new{tag}", 1, server, b'{"submissionID": "new"}'),
            (f"early{tag}", 2, server, None), (f"again{tag}", 5, server, b"{}"),
            (f"claims-orphan{tag}", 4, server, None), (f"twice{tag}", 6, server, None),
            (f"twice{tag}", 7, server, b"{}")]


def _view(record: Record | None) -> dict[str, Any]:
    """What must match: all but the fields that name the submission or the server, and
    the time events were applied."""
    assert record is not None
    return {k: v for k, v in msgspec.structs.asdict(record).items()
            if k not in ("submission_id", "server", "prior_runs", "updated_at")}


def test_many_at_once_make_the_records_one_at_a_time_make(store: SQLStore) -> None:
    one, many = "127.0.0.1:1", "127.0.0.2:2"
    for sid, queue_id, server, body in _situations(store, one, "@1"):
        store.record_queued(sid, "echo", queue_id, server, batch="b", at=AT, body=body)
    jobs = _situations(store, many, "@2")
    assert store.record_queued_many("echo", jobs, batch="b", at=AT) == 5
    for name in ("new", "early", "again", "claims-orphan", "twice"):
        assert _view(store.get(f"{name}@2")) == _view(store.get(f"{name}@1")), name
    assert store.get(orphan_id(many, 4)) is None
    claimed = store.get("claims-orphan@2")
    assert claimed is not None and (claimed.state, claimed.reason) == ("failed", "bad body")
    twice = store.get("twice@2")
    assert twice is not None and twice.queue_id == 7 and twice.prior_runs == [f"{many}/6"]
    again = store.get("again@2")
    assert again is not None and again.prior_runs == [f"{many}/3"]
