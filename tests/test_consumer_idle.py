"""An idle consumer with one server waits there for the next event on any of its tubes
instead of polling, applies it when it arrives, and still stops when asked; with several
servers it polls them all. Real beanstalkd, both stores."""

from __future__ import annotations

import threading

import greenstalk

from bystroq.config import LoadedConfig
from bystroq.consumer import IDLE_WAIT_S, Consumer
from bystroq.messages import CompletedJobMessage, SubmittedJobMessage, encode
from bystroq.records.sql import SQLStore
from bystroq.testing import wait_until
from tests.conftest import Tubes

EMPTY = {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def _waiting(tubes: Tubes, tube: str) -> int:
    """Clients blocked in a reserve on `tube` (0 before anyone watches it)."""
    with tubes.client() as client:
        try:
            return int(client.stats_tube(tube)["current-waiting"])
        except greenstalk.NotFoundError:
            return 0


def test_idle_consumer_waits_on_the_server_and_applies_what_arrives(
        config: LoadedConfig, tubes: Tubes, store: SQLStore) -> None:
    events = config.category("echo").events
    with Consumer(config, store, ["echo"]) as consumer:
        running = threading.Thread(target=consumer.run, name="consumer")
        running.start()
        try:
            wait_until(lambda: _waiting(tubes, events) == 1, timeout_s=10)
            with tubes.client(use=events) as client:
                client.put(encode(SubmittedJobMessage(submissionID="w1", queueID=7, at=1.0,
                                                      seq=0, attempt=1)))
                client.put(encode(CompletedJobMessage(submissionID="w1", queueID=7, at=2.0,
                                                      seq=1, attempt=1)))
            wait_until(lambda: (r := store.get("w1")) is not None and r.state == "completed",
                       timeout_s=10)
            wait_until(lambda: _waiting(tubes, events) == 1, timeout_s=10)  # waits again
        finally:
            consumer.stop()
            running.join(timeout=IDLE_WAIT_S + 10)
        assert not running.is_alive()
    assert consumer.stats.applied == 2
    assert tubes.counts(events) == EMPTY


def test_consumer_of_several_tubes_waits_on_all(config: LoadedConfig, tubes: Tubes,
                                                store: SQLStore) -> None:
    watched = [config.category(name).events for name in ("echo", "annotation")]
    with Consumer(config, store) as consumer:
        running = threading.Thread(target=consumer.run, name="consumer")
        running.start()
        try:
            wait_until(lambda: all(_waiting(tubes, tube) == 1 for tube in watched),
                       timeout_s=10)
            with tubes.client(use=watched[1]) as client:
                client.put(encode(CompletedJobMessage(submissionID="p1", queueID=8, at=1.0,
                                                      seq=0, attempt=1)))
            wait_until(lambda: store.get("p1") is not None, timeout_s=10)
        finally:
            consumer.stop()
            running.join(timeout=IDLE_WAIT_S + 10)
        assert not running.is_alive()
    record = store.get("p1")
    assert record is not None and record.category == "annotation"
    assert tubes.counts(watched[1]) == EMPTY


def test_consumer_of_two_servers_polls_them(two_configs: LoadedConfig, tubes: Tubes,
                                            store: SQLStore) -> None:
    events = two_configs.category("echo").events
    with Consumer(two_configs, store, ["echo"]) as consumer:
        running = threading.Thread(target=consumer.run, name="consumer")
        running.start()
        try:
            wait_until(lambda: consumer.stats.rounds > 20, timeout_s=10)
            assert _waiting(tubes, events) == 0  # never held on one server
            with tubes.client(use=events) as client:
                client.put(encode(CompletedJobMessage(submissionID="t1", queueID=9, at=1.0,
                                                      seq=0, attempt=1)))
            wait_until(lambda: store.get("t1") is not None, timeout_s=10)
        finally:
            consumer.stop()
            running.join(timeout=10)
        assert not running.is_alive()
