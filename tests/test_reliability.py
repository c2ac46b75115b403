"""Retries, the poison cap, time limits, failure of the report path, graceful shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bystroq import Outcome, Producer, Retry, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.examples.echo import EchoJob
from bystroq.progress import ProgressPublisher
from bystroq.testing import Beanstalkd, config_for, config_text, wait_until
from bystroq.worker import Listener, load_listener
from tests.conftest import Tubes

RETRY_NOW = "max_attempts: 3\nretry: {base_s: 0, max_s: 0, jitter: false}"


def test_retry_policy_releases_then_fails_on_the_last_attempt(
    server: Beanstalkd, prefix: str, tubes: Tubes
) -> None:
    config = config_for([server.address], prefix=prefix, extra=RETRY_NOW)
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID="r", fail="flaky"))
    with Worker(config, "echo") as worker:
        assert [worker.step() for _ in range(4)] == [
            Outcome.RETRYING, Outcome.RETRYING, Outcome.FAILED, Outcome.NONE]
    events = tubes.events(config.category("echo").events)
    assert [(e["event"], e["attempt"]) for e in events] == [
        ("started", 1), ("retrying", 1), ("started", 2), ("retrying", 2), ("started", 3),
        ("failed", 3)]
    assert events[1]["reason"] == "RuntimeError: flaky" and events[1]["delay_s"] == 0
    assert tubes.counts(config.category("echo").submission)["buried"] == 1


def test_retry_on_lists_the_exceptions_that_retry(
    server: Beanstalkd, prefix: str, tubes: Tubes
) -> None:
    extra = "max_attempts: 3\nretry: {base_s: 0, max_s: 0, on: [TimeoutError]}"
    config = config_for([server.address], prefix=prefix, extra=extra)
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID="r", fail="not a timeout"))
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.FAILED


def test_explicit_retry_with_delay(config: LoadedConfig, tubes: Tubes) -> None:
    echo = load_listener("bystroq.examples.echo")

    def handler(publisher: ProgressPublisher, job: EchoJob) -> str:
        raise Retry(delay_s=30, reason="upstream busy")

    listener = Listener(EchoJob, handler, echo.submit_msg_fn, echo.completed_msg_fn)
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="x"))
    with Worker(config, "echo", listener) as worker:
        assert worker.step() is Outcome.RETRYING
    events = tubes.events(config.category("echo").events)
    assert events[-1]["event"] == "retrying" and events[-1]["delay_s"] == 30
    assert events[-1]["reason"] == "upstream busy"
    with tubes.client() as client:
        stats = client.stats_job(handle.job_id)
    assert stats["state"] == "delayed" and 25 <= stats["time-left"] <= 30


def test_backoff_grows_and_is_capped() -> None:
    from bystroq.config import RetryConfig
    from bystroq.worker.policy import RetryPolicy

    policy = RetryPolicy(10, RetryConfig(base_s=2, max_s=20, jitter=False))
    assert [policy.backoff_s(a) for a in range(1, 7)] == [2, 4, 8, 16, 20, 20]
    jittered = RetryPolicy(10, RetryConfig(base_s=8, max_s=100))
    assert all(4 <= jittered.backoff_s(1) <= 8 for _ in range(50))


def test_poison_job_is_buried_after_max_attempts(
    server: Beanstalkd, prefix: str, tubes: Tubes
) -> None:
    """A job whose workers keep dying: the server's reserve count caps it."""
    config = config_for([server.address], prefix=prefix, extra="max_attempts: 2")
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="poison"))
    submission = config.category("echo").submission
    for _ in range(2):  # two workers took it and died: their connections closed
        with tubes.client(watch=submission) as client:
            assert client.reserve(1).id == handle.job_id
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.GAVE_UP
    events = tubes.events(config.category("echo").events)
    assert [e["event"] for e in events] == ["failed"]
    assert events[0]["reason"].startswith("gave up after 2 attempts")
    assert events[0]["attempt"] == 3
    with tubes.client() as client:
        assert client.stats_job(handle.job_id)["state"] == "buried"


def test_the_cap_comes_before_decoding(server: Beanstalkd, prefix: str, tubes: Tubes) -> None:
    """A body that killed the workers that decoded it is capped without decoding it again."""
    config = config_for([server.address], prefix=prefix, extra="max_attempts: 1")
    with Producer(config) as producer:
        handle = producer.submit("echo", b'{"submissionID": "p", "sleep_s": "no"}')
    with tubes.client(watch=config.category("echo").submission) as client:
        assert client.reserve(1).id == handle.job_id  # a worker took it and died
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.GAVE_UP
    (event,) = tubes.events(config.category("echo").events)
    assert event["event"] == "failed" and event["gaveUp"] is True
    assert event["submissionID"] == "p" and event["queueID"] == handle.job_id


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_timeout_stops_the_handler(
    server: Beanstalkd, prefix: str, tubes: Tubes, isolation: str
) -> None:
    config = config_for([server.address], prefix=prefix, extra="timeout: 0.5")
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID="slow", sleep_s=60))
    with Worker(config, "echo", options=WorkerOptions(isolation=isolation)) as worker:
        assert worker.step() is Outcome.FAILED
    events = tubes.events(config.category("echo").events)
    assert events[-1]["reason"] == "JobTimeout: handler ran past its timeout of 0.5s"


def test_event_that_cannot_be_stored_leaves_the_job_on_the_server(
    prefix: str, tmp_path: Path
) -> None:
    """The server refuses the completed event (it is draining): the job is released, never
    deleted. (An event too big for the server fails the job instead: test_worker.)"""
    server = Beanstalkd().start()
    try:
        config = config_for([server.address], prefix=prefix)
        tubes = Tubes(server.address)
        with Producer(config) as producer:
            handle = producer.submit("echo", EchoJob(submissionID=1))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGUSR1)  # drain mode: every put is refused
        with tubes.client() as client:
            wait_until(lambda: str(client.stats()["draining"]).lower() == "true")
        with Worker(config, "echo") as worker:
            assert worker.step() is Outcome.RELEASED
        with tubes.client() as client:
            stats = client.stats_job(handle.job_id)
            assert (stats["state"], stats["pri"]) == ("delayed", 2**16)
        assert tubes.events(config.category("echo").events) == []
    finally:
        server.kill()


def _listen(config_file: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bystroq", "--json-logs", "--config", str(config_file),
         "listen", "--tube", "echo", *args],
        stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.chaos
def test_sigterm_lets_running_jobs_finish(
    server: Beanstalkd, prefix: str, tubes: Tubes, tmp_path: Path
) -> None:
    config_file = tmp_path / "c.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    config = config_for([server.address], prefix=prefix)
    with Producer(config) as producer:
        for i in range(8):
            producer.submit("echo", EchoJob(submissionID=i, sleep_s=1.5))
    worker = _listen(config_file, "--concurrency", "8", "--drain-timeout", "30")
    submission = config.category("echo").submission
    wait_until(lambda: tubes.counts(submission)["reserved"] == 8, timeout_s=30)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert tubes.counts(submission) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    completed = [e for e in tubes.events(config.category("echo").events)
                 if e["event"] == "completed"]
    assert len(completed) == 8
    assert any(json.loads(line)["event"] == "stopping: finishing running jobs"
               for line in err.splitlines())


@pytest.mark.chaos
def test_short_drain_releases_jobs_for_another_worker(
    server: Beanstalkd, prefix: str, tubes: Tubes, tmp_path: Path
) -> None:
    config_file = tmp_path / "c.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    config = config_for([server.address], prefix=prefix)
    with Producer(config) as producer:
        for i in range(4):
            producer.submit("echo", EchoJob(submissionID=i, sleep_s=3))
    worker = _listen(config_file, "--concurrency", "4", "--drain-timeout", "0.5")
    submission = config.category("echo").submission
    wait_until(lambda: tubes.counts(submission)["reserved"] == 4, timeout_s=30)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert tubes.counts(submission)["ready"] == 4  # released at once, no delay
    released = [json.loads(line) for line in err.splitlines()
                if json.loads(line)["event"] == "job released for another worker"]
    assert len(released) == 4
    # Another worker takes them at once and completes them, as their second attempt.
    options = WorkerOptions(concurrency=4, burst=True)
    with Worker(config, "echo", options=options) as other:
        other.run()
    assert other.counts[Outcome.COMPLETED] == 4
    completed = [e for e in tubes.events(config.category("echo").events)
                 if e["event"] == "completed"]
    assert sorted((e["submissionID"], e["attempt"]) for e in completed) == [
        (i, 2) for i in range(4)]


@pytest.mark.chaos
def test_second_signal_stops_at_once(
    server: Beanstalkd, prefix: str, tubes: Tubes, tmp_path: Path
) -> None:
    config_file = tmp_path / "c.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    config = config_for([server.address], prefix=prefix)
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID=1, sleep_s=60))
    worker = _listen(config_file, "--drain-timeout", "600")
    submission = config.category("echo").submission
    wait_until(lambda: tubes.counts(submission)["reserved"] == 1, timeout_s=30)
    worker.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping" in (worker.stderr.readline() if worker.stderr else "x"))
    worker.send_signal(signal.SIGINT)
    worker.communicate(timeout=30)
    assert worker.returncode == 0
    assert tubes.counts(submission)["ready"] == 1


@pytest.mark.chaos
def test_worker_reconnects_after_its_server_restarts(prefix: str, tmp_path: Path) -> None:
    """A network cut (here: the server restarted on its port): the worker goes on."""
    live = Beanstalkd(binlog_dir=tmp_path / "binlog").start()
    try:
        config = config_for([live.address], prefix=prefix)
        tubes = Tubes(live.address)
        with Producer(config) as producer:
            producer.submit("echo", EchoJob(submissionID="before"))
        with Worker(config, "echo") as worker:
            assert worker.step() is Outcome.COMPLETED
            live.restart()
            with Producer(config) as producer:
                producer.submit("echo", EchoJob(submissionID="after"))
            outcome = Outcome.NONE
            for _ in range(50):  # the first tries meet the closed connection, then backoff
                outcome = worker.step(wait_s=0.2)
                if outcome is not Outcome.NONE:
                    break
            assert outcome is Outcome.COMPLETED
        done = [e["submissionID"] for e in tubes.events(config.category("echo").events)
                if e["event"] == "completed"]
        assert "after" in done
    finally:
        live.kill()
