"""No event stops the consumer: poison events are buried, the rest of their batch applied;
a store that goes away keeps the events on the server until it is back."""

from __future__ import annotations

import msgspec
import pytest

from bystroq import Producer, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.records import Store, open_store
from bystroq.testing import wait_until
from tests.chaos.core import fill, small_disk
from tests.conftest import Tubes


def _put(tubes: Tubes, tube: str, *bodies: dict[str, object] | bytes) -> None:
    with tubes.client(use=tube) as client:
        for body in bodies:
            client.put(body if isinstance(body, bytes) else msgspec.json.encode(body))


def _completed(sid: str, queue_id: int = 1) -> dict[str, object]:
    return {"event": "completed", "submissionID": sid, "queueID": queue_id, "attempt": 1,
            "seq": 1, "at": 1000.0, "answer": 42}


def test_poison_events_are_buried_and_the_rest_applied(
    config: LoadedConfig, tubes: Tubes, store: Store
) -> None:
    """A NUL in a reason (PostgreSQL refuses NUL in text) is stored escaped; numbers past
    what a column holds (SQLite raised OverflowError) are refused when parsed."""
    events = config.category("echo").events
    _put(tubes, events,
         _completed("before"),
         {"event": "failed", "submissionID": "nul", "queueID": 2, "attempt": 1,
          "reason": "KeyError: 'a\x00b'"},
         {**_completed("huge-attempt", 3), "attempt": 2**63},
         {**_completed("huge-seq", 4), "seq": 2**64},
         {**_completed("huge-queue", 2**63)},
         {"event": "progress", "submissionID": "huge-progress", "queueID": 5,
          "data": {"progress": 2**63}},
         {"event": "started", "submissionID": "nul\x00id", "queueID": 6},
         _completed("after", 7))
    with Consumer(config, store) as consumer:
        stats = consumer.run(burst=True)
    assert (stats.applied, stats.malformed) == (3, 5)
    assert tubes.counts(events) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 5}
    assert store.get("before").state == "completed"  # type: ignore[union-attr]
    assert store.get("after").state == "completed"  # type: ignore[union-attr]
    failed = store.get("nul")
    assert failed is not None and failed.state == "failed"
    assert failed.reason == "KeyError: 'a\\x00b'"


def test_an_event_the_store_refuses_is_buried_and_its_batch_applied(
    config: LoadedConfig, tubes: Tubes, store: Store
) -> None:
    """The database itself refuses one record (a constraint a user added): that event is
    buried, every other event of the same batch is applied, and the consumer goes on."""
    with store.transaction() as cur:
        if store.url.startswith("sqlite"):
            cur.execute("CREATE TRIGGER no_poison BEFORE INSERT ON bystroq_records "
                        "WHEN NEW.submission_id = 'poison' "
                        "BEGIN SELECT RAISE(ABORT, 'poison refused'); END")
        else:
            cur.execute("ALTER TABLE bystroq_records ADD CONSTRAINT no_poison "
                        "CHECK (submission_id <> 'poison')")
    events = config.category("echo").events
    _put(tubes, events, *[_completed(f"s{n}", n) for n in range(1, 4)],
         _completed("poison", 9), *[_completed(f"s{n}", n) for n in range(4, 7)])
    with Consumer(config, store) as consumer:
        stats = consumer.run(burst=True)
    assert (stats.applied, stats.rejected) == (6, 1)
    assert store.count_by_state() == {"completed": 6}
    assert tubes.counts(events)["buried"] == 1 and tubes.counts(events)["ready"] == 0




def test_a_full_disk_keeps_events_on_the_server_until_there_is_room(
    config: LoadedConfig, tubes: Tubes
) -> None:
    events = config.category("echo").events
    with small_disk() as disk:
        if disk is None:
            pytest.skip("cannot mount a small file system here")
        with open_store(f"sqlite:///{disk / 'records.db'}") as store:
            _put(tubes, events, *[_completed(f"a{n}", n) for n in range(50)])
            with Consumer(config, store) as consumer:
                consumer.run(burst=True)
                fill(disk / "filler")
                _put(tubes, events, *[{**_completed(f"b{n}", 100 + n), "pad": "x" * 2000}
                                      for n in range(300)])
                stats = consumer.run(burst=True)  # returns: the store is down, events wait
                assert stats.store_outages >= 1
                assert tubes.counts(events)["ready"] + tubes.counts(events)["reserved"] > 0
                assert tubes.counts(events)["buried"] == 0
                (disk / "filler").unlink()
                wait_until(lambda: store.available_in() == 0, timeout_s=10)  # its backoff
                consumer.run(burst=True)
            assert store.count_by_state() == {"completed": 350}
            assert tubes.counts(events) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_submission_ids_1_and_quoted_1_are_two_submissions(
    config: LoadedConfig, store: Store
) -> None:
    """The record key keeps the id's type: both jobs run and both results are kept."""
    with Producer(config, recorder=store) as producer:
        producer.submit("echo", {"submissionID": 1, "message": "number"})
        producer.submit("echo", {"submissionID": "1", "message": "string"})
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with Consumer(config, store) as consumer:
        consumer.run(burst=True)
    number, string = store.get("1"), store.get('"1"')
    assert number is not None and string is not None
    assert (number.state, number.result) == ("completed", {"message": "number"})
    assert (string.state, string.result) == ("completed", {"message": "string"})
