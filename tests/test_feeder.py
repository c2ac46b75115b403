"""The batch feeder killed or stalled at every step of a put: no item lost, none run twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bystroq import Producer, Worker
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.ops.batches import batch_status, cancel_batch, create_batch
from bystroq.ops.batches.feeder import Feeder, park_delay
from bystroq.records import Store
from bystroq.testing import Beanstalkd, config_for, config_text, wait_until
from bystroq.worker import Outcome
from tests.batching import run_batch, running_worker, write_jsonl
from tests.chaos.batches import killed_feeders
from tests.conftest import Tubes


def test_a_claim_whose_feeder_died_before_the_put_is_put_once(
    config: LoadedConfig, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    assert tubes.counts(config.category("echo").submission)["ready"] == 1
    # A feeder claims the next item and dies before putting it.
    store.claim_batch_items(batch.batch_id, 1)
    with Producer(config) as producer:
        feeder = Feeder(config, store, producer, grace_s=0)
        feeder.step()
        feeder.step()
        feeder.close()
    assert tubes.counts(config.category("echo").submission)["ready"] == 2
    assert store.stale_claims(float("inf")) == []


def test_a_claim_whose_feeder_died_after_the_put_is_put_once(
    config: LoadedConfig, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    # A feeder claims the next item, puts it parked, and dies before confirming the put.
    (claimed,) = store.claim_batch_items(batch.batch_id, 1)
    with Producer(config) as producer:
        lost = producer.submit("echo", claimed.body.encode(), delay=park_delay(claimed))
        feeder = Feeder(config, store, producer, grace_s=0)
        feeder.step()
        feeder.close()
    submission = config.category("echo").submission
    assert tubes.counts(submission) == {"ready": 2, "reserved": 0, "delayed": 0, "buried": 0}
    record = store.get(claimed.submission_id)
    assert record is not None and record.queue_id not in (None, lost.job_id)
    assert store.stale_claims(float("inf")) == []


def test_a_put_confirmed_but_not_kicked_is_kicked(
    config: LoadedConfig, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    # A feeder confirms its parked put and dies before kicking it to ready.
    (claimed,) = store.claim_batch_items(batch.batch_id, 1)
    with Producer(config) as producer:
        parked = producer.submit("echo", claimed.body.encode(), delay=park_delay(claimed))
        assert store.confirm_put(claimed, parked.job_id, parked.server.name)
        feeder = Feeder(config, store, producer, grace_s=0)
        feeder.step()
        feeder.close()
    counts = tubes.counts(config.category("echo").submission)
    assert counts["ready"] == 2 and counts["delayed"] == 0
    record = store.get(claimed.submission_id)
    assert record is not None and record.queue_id == parked.job_id
    assert store.stale_claims(float("inf")) == []


def test_a_put_kicked_but_not_released_is_not_put_again(
    config: LoadedConfig, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    # A feeder confirms and kicks its put, and dies before dropping the claim.
    (claimed,) = store.claim_batch_items(batch.batch_id, 1)
    with Producer(config) as producer:
        put = producer.submit("echo", claimed.body.encode(), delay=park_delay(claimed))
        assert store.confirm_put(claimed, put.job_id, put.server.name)
        tubes.client().kick_job(put.job_id)
        feeder = Feeder(config, store, producer, grace_s=0)
        feeder.step()
        feeder.close()
    assert tubes.counts(config.category("echo").submission)["ready"] == 2
    assert store.stale_claims(float("inf")) == []


def test_a_parked_put_of_a_cancelled_batch_is_deleted(
    config: LoadedConfig, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    (claimed,) = store.claim_batch_items(batch.batch_id, 1)
    with Producer(config) as producer:
        producer.submit("echo", claimed.body.encode(), delay=park_delay(claimed))  # then died
        cancel_batch(store, batch.batch_id)
        feeder = Feeder(config, store, producer, grace_s=0)
        feeder.step()
        feeder.close()
    assert tubes.counts(config.category("echo").submission) == {
        "ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    assert store.stale_claims(float("inf")) == []


def test_a_lost_claim_is_put_again_while_a_server_is_away(
    server: Beanstalkd, prefix: str, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    other = Beanstalkd().start()
    try:
        config = config_for([server.address, other.address], prefix=prefix)
        path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
        batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
        store.claim_batch_items(batch.batch_id, 1)  # its feeder dies
        other.kill()
        with Producer(config) as producer:
            feeder = Feeder(config, store, producer, grace_s=0)
            feeder.step()
            feeder.close()
    finally:
        other.kill()
    assert store.stale_claims(float("inf")) == []
    assert store.batch_in_flight(batch.batch_id) == 2
    assert sum(r.queue_id is not None for r in store.list(batch=batch.batch_id)) == 2


def test_a_feeder_that_lost_its_claim_deletes_its_put(
    config: LoadedConfig, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    (claimed,) = store.claim_batch_items(batch.batch_id, 1)
    assert store.take_over(claimed) is not None  # another feeder thought this one dead
    with Producer(config) as producer:
        late = producer.submit("echo", claimed.body.encode(), delay=park_delay(claimed))
    assert not store.confirm_put(claimed, late.job_id, late.server.name)


PAUSED_FEEDER = """
import sys, time
from bystroq.config import load
from bystroq.ops.batches.feeder import Feeder, park_delay
from bystroq.producer import Producer
from bystroq.records import open_store

class PutThenPause(Producer):
    def submit_many(self, *args, **kwargs):
        handles = super().submit_many(*args, **kwargs)
        print(handles[0].job_id, flush=True)
        time.sleep(3600)  # killed here: between the put and its record
        return handles

config = load(sys.argv[1])
with open_store(sys.argv[2]) as store, PutThenPause(config) as producer:
    Feeder(config, store, producer).feed(store.get_batch(sys.argv[3]))
"""


def test_a_feeder_killed_between_put_and_record_while_another_feeds_puts_once(
    config: LoadedConfig, server: Beanstalkd, prefix: str, tubes: Tubes, store: Store,
    records_url: str, tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(5)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=2)
    config_file = tmp_path / "beanstalk.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    with Worker(config, "echo") as worker, Consumer(config, store) as consumer:
        assert worker.step() is not Outcome.NONE
        consumer.drain()  # item 0 done: one slot free
        # Feeder A claims item 2, puts it, and is killed before recording the put.
        feeder_a = subprocess.Popen(
            [sys.executable, "-c", PAUSED_FEEDER, str(config_file), records_url,
             batch.batch_id], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert feeder_a.stdout is not None
            assert feeder_a.stdout.readline().strip().isdigit()
        finally:
            feeder_a.kill()
            feeder_a.wait()
            if feeder_a.stdout is not None:
                feeder_a.stdout.close()
        assert worker.step() is not Outcome.NONE
        consumer.drain()  # item 1 done
        with Producer(config) as producer:
            # Feeder B puts item 3, after A's put: the batch's highest queueID passes A's.
            feeder_b = Feeder(config, store, producer, grace_s=3600)
            assert feeder_b.step() == 1
            feeder_b.close()
            # Later, a feeder recovers A's claim.
            recovering = Feeder(config, store, producer, grace_s=0)
            recovering.step()
            recovering.close()
    with running_worker(config):
        run_batch(config, store, batch.batch_id)
    status = batch_status(store, batch.batch_id)
    assert status.batch.state == "completed" and status.counts["completed"] == 5
    for record in store.list(batch=batch.batch_id, limit=100):
        events = [e.event for e in store.timeline(record.submission_id)]
        assert events == ["started", "completed"], (record.submission_id, events)
    assert tubes.counts(config.category("echo").submission) == {
        "ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


KILLABLE_FEEDER = """
import sys
from bystroq.config import load
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records import open_store

with open_store(sys.argv[2]) as store, ConsumeAndFeed(load(sys.argv[1]), store,
                                                      feed_grace_s=1) as consumer:
    consumer.run()
"""


def test_feeder_killed_mid_batch(config: LoadedConfig, server: Beanstalkd, prefix: str,
                                 store: Store, records_url: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{"sleep_s": 0.02} for _ in range(60)])
    batch = create_batch(config, store, "echo", path, concurrency=4)
    config_file = tmp_path / "beanstalk.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    command = [sys.executable, "-c", KILLABLE_FEEDER, str(config_file), records_url]
    with running_worker(config, concurrency=4):
        for kill_at in (10, 30):
            feeder = subprocess.Popen(command, stderr=subprocess.DEVNULL)
            try:
                wait_until(lambda n=kill_at: store.count_by_state(batch.batch_id).get(
                    "completed", 0) >= n, timeout_s=60)
            finally:
                feeder.kill()
                feeder.wait()
        run_batch(config, store, batch.batch_id)
    status = batch_status(store, batch.batch_id)
    assert status.batch.state == "completed" and status.counts["completed"] == 60
    for record in store.list(batch=batch.batch_id, limit=100):
        events = [e.event for e in store.timeline(record.submission_id)]
        assert events == ["started", "completed"], (record.submission_id, events)


@pytest.mark.chaos
def test_feeders_sigkilled_at_random_moments() -> None:
    report = killed_feeders(items=400, kills=15)
    assert report.notes == ["jobs left on the servers=0"]
    assert report.lost == 0 and report.completed == 400 and report.ran_twice == 0
