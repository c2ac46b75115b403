"""The event feed's order on PostgreSQL: an event whose transaction commits after a later
one's is still read, in id order, by a reader that waits at the gap."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from bystroq.records import Store, feeds, open_store
from bystroq.testing import wait_until
from tests.conftest import _postgres_schema_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_schema_url(f"t_{uuid.uuid4().hex[:12]}")


def _insert(cur: object, key: str) -> None:
    cur.execute(  # type: ignore[attr-defined]
        "INSERT INTO bystroq_events (key, submission_id, category, server, event, at, "
        "applied, body) VALUES (%s, %s, 'echo', 's:1', 'started', %s, 1, '{}')",
        (key, key, time.time()))


def test_a_late_commit_is_read_in_order(pg_url: str) -> None:
    import psycopg

    store: Store
    with open_store(pg_url) as store, psycopg.connect(pg_url) as slow, \
            psycopg.connect(pg_url, autocommit=True) as fast:
        with slow.cursor() as cur:
            _insert(cur, "early-id")  # takes the lower id, commits later
        _insert(fast.cursor(), "late-id")
        follower = feeds.Follower(0, gap_wait_s=60)
        first = feeds.events_after(store, 0)
        assert [e.submission_id for e in first] == ["late-id"]
        assert follower.take(first) == []  # a gap before it: wait
        slow.commit()
        both = feeds.events_after(store, 0)
        assert [e.submission_id for e in follower.take(both)] == ["early-id", "late-id"]


def test_a_gap_that_never_fills_is_passed_after_the_wait(pg_url: str) -> None:
    import psycopg

    with open_store(pg_url) as store, psycopg.connect(pg_url) as aborted, \
            psycopg.connect(pg_url, autocommit=True) as fast:
        with aborted.cursor() as cur:
            _insert(cur, "rolled-back")
        aborted.rollback()
        _insert(fast.cursor(), "kept")
        follower = feeds.Follower(0, gap_wait_s=0.2)
        page = feeds.events_after(store, 0)
        assert follower.take(page) == []
        taken: list[feeds.FeedEvent] = []
        def taken_some() -> bool:
            taken.extend(follower.take(page))
            return bool(taken)

        wait_until(taken_some)
        assert [e.submission_id for e in taken] == ["kept"]
