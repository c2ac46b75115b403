"""The consumer's batches in a row: the next batch is reserved while one is written to the
store; order within a submission holds across batches, and events reserved ahead of a
store outage go back to the server, in order, none lost or buried."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence

import greenstalk
import msgspec
import pytest

from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer, NoObserver
from bystroq.records import Store, open_store
from bystroq.records.model import IncomingEvent
from bystroq.testing import wait_until
from tests.conftest import Tubes, _postgres_schema_url

EMPTY = {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def _put_bystro_style(tubes: Tubes, tube: str, submissions: int) -> int:
    """started, progress and completed of each submission, as a Bystro worker sends them
    (no `seq`, no `at`: only the order they are applied in tells them apart), each kind
    after all of the kind before, so a submission's events land in different batches."""
    with tubes.client(use=tube) as client:
        for body in ({"event": "started"}, {"event": "progress", "data": {"progress": 5}},
                     {"event": "completed", "answer": 42}):
            for n in range(submissions):
                client.put(msgspec.json.encode(
                    {**body, "submissionID": f"s{n}", "queueID": n + 1, "attempt": 1}))
    return 3 * submissions


def test_order_within_a_submission_holds_across_batches(
    config: LoadedConfig, tubes: Tubes, store: Store
) -> None:
    events = config.category("echo").events
    total = _put_bystro_style(tubes, events, 12)
    with Consumer(config, store, batch=5) as consumer:
        stats = consumer.run(burst=True)
    assert stats.applied == total
    for n in range(12):
        record = store.get(f"s{n}")
        assert record is not None
        # Progress applied before completed (an event after the terminal one is ignored).
        assert (record.state, record.progress, record.result) == ("completed", 5,
                                                                 {"answer": 42})
        assert [e.event for e in store.timeline(f"s{n}")] == ["started", "progress",
                                                              "completed"]
    assert tubes.counts(events) == EMPTY


class _CutAfterFirstBatch(NoObserver):
    """Ends the store's database session once the first batch is applied (as a database
    restart does), from another session."""

    def __init__(self, admin_url: str, application: str) -> None:
        self.admin_url, self.application, self.batches = admin_url, application, 0

    def applied(self, category: str, events: Sequence[IncomingEvent]) -> None:
        import psycopg

        self.batches += 1
        if self.batches == 1:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = %s", (self.application,))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_schema_url(f"t_{uuid.uuid4().hex[:12]}")


@pytest.mark.postgres
def test_events_reserved_ahead_of_an_outage_go_back_in_order(
    config: LoadedConfig, tubes: Tubes, postgres_url: str
) -> None:
    application = f"bystroq-test-{uuid.uuid4().hex[:8]}"
    events = config.category("echo").events
    total = _put_bystro_style(tubes, events, 12)
    admin_url = postgres_url.split("?")[0]
    with open_store(f"{postgres_url}&application_name={application}") as store:
        observer = _CutAfterFirstBatch(admin_url, application)
        with Consumer(config, store, batch=5, observer=observer) as consumer:
            stats = consumer.run(burst=True)  # stops: the store is away
            assert stats.store_outages == 1 and stats.applied == 5
            counts = tubes.counts(events)
            assert counts == {**EMPTY, "ready": total - 5}  # none held, none buried
            wait_until(lambda: store.available_in() == 0, timeout_s=10)  # its backoff
            assert consumer.run(burst=True).applied == total
        for n in range(12):
            record = store.get(f"s{n}")
            assert record is not None
            assert (record.state, record.progress) == ("completed", 5)
    assert tubes.counts(events) == EMPTY


def _waiting(tubes: Tubes, tube: str) -> int:
    with tubes.client() as client:
        try:
            return int(client.stats_tube(tube)["current-waiting"])
        except greenstalk.NotFoundError:
            return 0


def test_an_idle_consumer_waits_in_the_server_and_stops_at_once(
    config: LoadedConfig, tubes: Tubes, store: Store
) -> None:
    """With one events tube on one server, an idle consumer blocks in a reserve (no
    polling); an event wakes it, and stop() ends the wait."""
    events = config.category("echo").events
    consumer = Consumer(config, store, categories=["echo"])
    running = threading.Thread(target=consumer.run)
    running.start()
    try:
        wait_until(lambda: _waiting(tubes, events) == 1)
        _put_bystro_style(tubes, events, 1)
        wait_until(lambda: (r := store.get("s0")) is not None and r.state == "completed")
        wait_until(lambda: _waiting(tubes, events) == 1)
    finally:
        consumer.stop()
        running.join(timeout=10)
        consumer.close()
    assert not running.is_alive()
    assert consumer.stats.applied == 3 and tubes.counts(events) == EMPTY
