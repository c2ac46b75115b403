from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bystroq import JobTooBig, Producer, ServersUnavailable, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.errors import BystroqError, SubmitOutcomeUnknown
from bystroq.examples.echo import EchoJob
from bystroq.messages import ProgressMessage
from bystroq.progress import ProgressPublisher, ProgressReporter
from bystroq.records import open_store
from bystroq.testing import Beanstalkd, config_for
from tests.conftest import Tubes


def test_submit_returns_job_id_and_server(config: LoadedConfig, tubes: Tubes,
                                          server: Beanstalkd) -> None:
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="x"), priority=5, ttr=7)
    assert handle.server.port == server.port and handle.submission_id == "x"
    with tubes.client() as client:
        stats = client.stats_job(handle.job_id)
    assert (stats["tube"], stats["pri"], stats["ttr"]) == (handle.tube, 5, 7)


def test_submit_by_submission_tube_name_and_dict(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        handle = producer.submit(config.category("echo").submission, {"submissionID": 3})
    with tubes.client() as client:
        assert client.peek(handle.job_id).body == b'{"submissionID":3}'


def test_job_too_big_is_refused_before_sending(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer, pytest.raises(JobTooBig) as info:
        producer.submit("echo", EchoJob(submissionID=1, message="x" * (1 << 20)))
    assert "max-job-size of 1048576 bytes" in str(info.value)
    assert "pass large data by reference" in str(info.value)
    assert tubes.counts(config.category("echo").submission)["ready"] == 0


def test_all_servers_down_raises_after_the_wait(prefix: str) -> None:
    config = config_for([Beanstalkd().address, Beanstalkd().address], prefix=prefix)
    with Producer(config, wait_s=0.3) as producer, pytest.raises(ServersUnavailable) as info:
        producer.submit("echo", EchoJob(submissionID=1))
    assert "no beanstalkd server answered" in str(info.value)


def test_producer_skips_a_dead_server(prefix: str, server: Beanstalkd) -> None:
    config = config_for([Beanstalkd().address, server.address], prefix=prefix)
    with Producer(config) as producer:
        handles = [producer.submit("echo", EchoJob(submissionID=i)) for i in range(6)]
    assert {h.server.port for h in handles} == {server.port}


@pytest.mark.timeout(20)  # the socket's own 30 s timeout would trip this
def test_the_wait_bounds_a_server_that_stopped_answering(prefix: str) -> None:
    paused = Beanstalkd().start()
    try:
        config = config_for([paused.address], prefix=prefix)
        with Producer(config, wait_s=1) as producer:
            producer.submit("echo", EchoJob(submissionID=0))  # connected
            assert paused.proc is not None
            paused.proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(SubmitOutcomeUnknown):  # sent, never answered
                producer.submit("echo", EchoJob(submissionID=1))
            assert time.monotonic() - started < 2
    finally:
        if paused.proc is not None:
            paused.proc.send_signal(signal.SIGCONT)
        paused.kill()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sent() -> list[object]:
    return []


@pytest.fixture
def publisher(sent: list[object]) -> Iterator[ProgressPublisher]:
    import msgspec

    def sender(tube: str, body: bytes) -> None:
        sent.append(msgspec.json.decode(body)["data"])

    yield ProgressPublisher("h", 1, "events", ProgressMessage(submissionID=1), sender=sender,
                            seq=itertools.count(1))


def test_reporter_throttles_by_count(publisher: ProgressPublisher, sent: list[object]) -> None:
    reporter = ProgressReporter(publisher, update_interval=10, min_interval_s=0)
    for _ in range(25):
        reporter.increment(1)
    assert sent == [{"progress": 10, "skipped": 0}, {"progress": 20, "skipped": 0}]
    reporter.flush()
    assert sent[-1] == {"progress": 25, "skipped": 0}
    reporter.flush()
    assert len(sent) == 3  # nothing new: nothing sent


def test_reporter_throttles_by_time(
    publisher: ProgressPublisher, sent: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr("bystroq.progress.time.monotonic", clock)
    reporter = ProgressReporter(publisher, update_interval=1, min_interval_s=1.0)
    reporter.increment(1)
    for _ in range(50):
        reporter.increment(1)  # within the same second: held back
    assert sent == [{"progress": 1, "skipped": 0}]
    clock.now += 1.5
    reporter.increment(1)
    assert sent[-1] == {"progress": 52, "skipped": 0}
    reporter.increment(5, force=True)
    assert sent[-1] == {"progress": 57, "skipped": 0}


def test_reporter_messages_and_skips(publisher: ProgressPublisher, sent: list[object]) -> None:
    reporter = ProgressReporter(publisher, update_interval=2, min_interval_s=0)
    reporter.message("loading")
    reporter.increment_skipped(2)
    assert sent == ["loading", {"progress": 0, "skipped": 2}]
    assert publisher.last_seq == 2


def test_each_producer_starts_its_round_robin_at_a_random_server(
    two_configs: LoadedConfig
) -> None:
    """Many one-job producers (a `bystroq submit` each) spread over the servers."""
    first_servers: set[str] = set()
    for n in range(40):
        with Producer(two_configs) as producer:
            first_servers.add(producer.submit("echo", {"submissionID": n}).server.name)
    assert len(first_servers) == 2


def test_a_producer_records_into_the_configs_store_and_waits_for_the_result(
    server: Beanstalkd, prefix: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    config = config_for([server.address], prefix=prefix, records=url)
    with Producer(config) as producer:  # no recorder given: the config's records store
        handle = producer.submit("echo", EchoJob(submissionID="r1", message="hi"))
        view = producer.record("r1")
        assert view is not None and view.state == "queued" and view.queue_id == handle.job_id
        with pytest.raises(TimeoutError, match="still queued"):
            handle.wait(timeout_s=0.2)
        with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
            worker.run()
        with open_store(url) as store, Consumer(config, store) as consumer:
            consumer.run(burst=True)
        done = handle.wait(timeout_s=5)
        assert (done.state, done.result) == ("completed", {"message": "hi"})
    with Producer(config, recorder=None) as producer, pytest.raises(BystroqError):
        producer.submit("echo", EchoJob(submissionID="r2")).wait(timeout_s=0.1)
