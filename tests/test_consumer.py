"""The events consumer, cancel and retry against real servers, on both records backends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bystroq import Outcome, Producer, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.examples.echo import EchoJob
from bystroq.ops.cancel import CancelResult, cancel_submission
from bystroq.ops.retry import retry_submission
from bystroq.records.sql import SQLStore
from bystroq.testing import Beanstalkd, config_text, wait_until
from tests.conftest import Invoke, Tubes

EMPTY = {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def consume(config: LoadedConfig, store: SQLStore) -> int:
    with Consumer(config, store) as consumer:
        return consumer.run(burst=True).applied


def test_events_become_records_and_are_deleted(
    config: LoadedConfig, tubes: Tubes, store: SQLStore
) -> None:
    with Producer(config, recorder=store) as producer:
        producer.submit("echo", EchoJob(submissionID="ok", message="hi", progress=2))
        producer.submit("echo", EchoJob(submissionID="bad", fail="boom"))
    assert store.get("ok").state == "queued"  # type: ignore[union-attr]
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    assert consume(config, store) == 6
    ok, bad = store.get("ok"), store.get("bad")
    assert ok is not None and bad is not None
    assert (ok.state, ok.progress, ok.result) == ("completed", 2, {"message": "hi"})
    assert (bad.state, bad.reason) == ("failed", "RuntimeError: boom")
    assert tubes.counts(config.category("echo").events) == EMPTY


def test_malformed_events_are_buried_not_dropped(
    config: LoadedConfig, tubes: Tubes, store: SQLStore
) -> None:
    events = config.category("echo").events
    with tubes.client(use=events) as client:
        client.put(b"garbage")
        client.put(b'{"event": "completed", "submissionID": "fine"}')
    with Consumer(config, store) as consumer:
        stats = consumer.run(burst=True)
    assert (stats.applied, stats.malformed) == (1, 1)
    assert tubes.counts(events)["buried"] == 1
    assert store.get("fine") is not None


KILL_AFTER_COMMIT = """
import os, signal, sys
from bystroq.config import load
from bystroq.consumer import Consumer
from bystroq.records import open_store

store = open_store(sys.argv[2])
apply_events = store.apply_events

def apply_then_die(events):
    apply_events(events)
    os.kill(os.getpid(), signal.SIGKILL)  # committed, not yet deleted from the server

store.apply_events = apply_then_die
Consumer(load(sys.argv[1]), store).run(burst=True)
"""


def test_consumer_killed_between_commit_and_delete(
    config: LoadedConfig, server: Beanstalkd, prefix: str, tubes: Tubes, store: SQLStore,
    records_url: str, tmp_path: Path,
) -> None:
    with Producer(config, recorder=store) as producer:
        for i in range(3):
            producer.submit("echo", EchoJob(submissionID=f"k{i}", progress=1))
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    events = config.category("echo").events
    assert tubes.counts(events)["ready"] == 9
    config_file = tmp_path / "beanstalk.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_COMMIT, str(config_file),
                             records_url], capture_output=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    assert {store.get(f"k{i}").state for i in range(3)} == {"completed"}  # type: ignore
    # Committed but never deleted: the server gives the events out again.
    wait_until(lambda: tubes.counts(events)["ready"] == 9)
    timelines = [store.timeline(f"k{i}") for i in range(3)]
    assert consume(config, store) == 9
    assert [store.timeline(f"k{i}") for i in range(3)] == timelines  # no double effect
    assert tubes.counts(events) == EMPTY


def test_cancel_before_start(config: LoadedConfig, tubes: Tubes, store: SQLStore) -> None:
    with Producer(config, recorder=store) as producer:
        producer.submit("echo", EchoJob(submissionID="c1"))
    outcome = cancel_submission(store, "c1")
    assert outcome.result is CancelResult.DELETED and "deleted" in str(outcome)
    record = store.get("c1")
    assert record is not None and record.state == "cancelled"
    assert tubes.counts(config.category("echo").submission) == EMPTY
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.NONE


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_cancel_a_running_submission(
    config: LoadedConfig, tubes: Tubes, store: SQLStore, isolation: str
) -> None:
    with Producer(config, recorder=store) as producer:
        producer.submit("echo", EchoJob(submissionID="run", sleep_s=60))
    options = WorkerOptions(isolation=isolation, max_jobs=1, worker_id=f"w-{isolation}")
    worker = Worker(config, "echo", options=options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        def started() -> bool:
            consume(config, store)
            record = store.get("run")
            return record is not None and record.state == "started"

        wait_until(started)
        outcome = cancel_submission(store, "run")
        assert outcome.result is CancelResult.REQUESTED
        assert "cancel sent to worker w-" in str(outcome)
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        worker.stop(0)
        thread.join(timeout=10)
    consume(config, store)
    record = store.get("run")
    assert record is not None and (record.state, record.reason) == (
        "cancelled", "cancelled by request")
    assert tubes.counts(config.category("echo").submission) == EMPTY


def test_retry_a_failed_submission(config: LoadedConfig, tubes: Tubes, store: SQLStore) -> None:
    with Producer(config, recorder=store) as producer:
        first = producer.submit("echo", EchoJob(submissionID="r1", fail="once"))
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.FAILED
    consume(config, store)
    assert tubes.counts(config.category("echo").submission)["buried"] == 1
    handle = retry_submission(config, store, "r1")
    assert handle.job_id != first.job_id
    # The last run's dead letter is gone: a kick cannot run the submission twice.
    assert tubes.counts(config.category("echo").submission) == {**EMPTY, "ready": 1}
    record = store.get("r1")
    assert record is not None and (record.state, record.queue_id) == ("queued", handle.job_id)
    with pytest.raises(Exception, match="only a failed or cancelled"):
        retry_submission(config, store, "r1")
    with Worker(config, "echo") as worker:  # the same body fails again: a new attempt
        assert worker.step() is Outcome.FAILED
    consume(config, store)
    record = store.get("r1")
    assert record is not None and (record.state, record.attempts) == ("failed", 2)
    assert [e.attempt for e in store.timeline("r1")] == [1, 1, 1, 1]
    assert [e.event for e in store.timeline("r1")] == ["started", "failed"] * 2


def test_records_commands(records_cli: Invoke) -> None:
    run = records_cli
    submit = ("submit", "--tube", "echo", "--json")
    assert run(*submit, '{"submissionID": "a", "message": "m"}')[0] == 0
    assert run(*submit, '{"submissionID": "b", "fail": "x"}')[0] == 0
    assert run(*submit, '{"submissionID": "c"}', "--delay", "60")[0] == 0
    assert run("listen", "--tube", "echo", "--burst")[0] == 0
    code, _, err = run("consume", "--burst")
    assert code == 0 and "applied 4 events" in err

    code, out, _ = run("status", "a")
    assert code == 0 and "state:      completed" in out and '{"message": "m"}' in out
    assert [line.split()[3] for line in out.splitlines()[-2:]] == ["started", "completed"]

    code, out, _ = run("list")
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
    assert rows == {"a": "completed", "b": "failed", "c": "queued"}
    code, out, _ = run("list", "--state", "failed", "--json")
    assert [r["submissionID"] for r in json.loads(out)] == ["b"]

    code, out, _ = run("cancel", "c")
    assert code == 0 and "deleted, it will not run" in out
    code, _, err = run("cancel", "a")
    assert code == 2 and "already completed" in err
    code, _, err = run("status", "nope")
    assert code == 2 and "no submission 'nope'" in err

    code, out, _ = run("retry", "b")
    assert code == 0 and out.startswith("submitted again as job")
    code, out, _ = run("status", "b")
    assert "state:      queued" in out
