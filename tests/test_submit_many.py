"""Producer.submit_many: puts pipelined in chunks over the servers, records written in
batches, and after a cut connection an account of which jobs are in and which are unknown."""

from __future__ import annotations

import signal

import pytest

from bystroq import Producer
from bystroq.errors import JobTooBig, SubmitIncomplete
from bystroq.examples.echo import EchoJob
from bystroq.records import Store
from bystroq.testing import Beanstalkd, config_for
from tests.conftest import total_puts


def test_jobs_are_put_in_order_over_every_server_and_recorded(
    fresh_servers: list[Beanstalkd], prefix: str, store: Store
) -> None:
    config = config_for([s.address for s in fresh_servers], prefix=prefix)
    tube = config.category("echo").submission
    jobs = [EchoJob(submissionID=f"s{i}") for i in range(100)]
    with Producer(config, recorder=store) as producer:
        handles = producer.submit_many("echo", jobs, chunk=16)
    assert [h.submission_id for h in handles] == [j.submissionID for j in jobs]
    assert {h.server.name for h in handles} == {s.address for s in fresh_servers}
    # Chunks in turn, from a server each producer picks at random.
    assert sorted(total_puts(s, tube) for s in fresh_servers) == [48, 52]
    record = store.get("s42")
    assert record is not None and record.state == "queued"
    assert (record.queue_id, record.server) == (handles[42].job_id, handles[42].server.name)
    assert store.count_by_state()["queued"] == 100


def test_a_body_over_max_job_size_puts_nothing(server: Beanstalkd, prefix: str) -> None:
    config = config_for([server.address], prefix=prefix)
    with Producer(config) as producer, pytest.raises(JobTooBig):
        big = EchoJob(submissionID=2, message="x" * (server.max_job_size + 1))
        producer.submit_many("echo", [EchoJob(submissionID=1), big])
    assert total_puts(server, config.category("echo").submission) == 0


def test_a_server_down_before_the_write_is_skipped(
    fresh_servers: list[Beanstalkd], prefix: str
) -> None:
    down, up = fresh_servers
    config = config_for([down.address, up.address], prefix=prefix)
    down.kill()
    with Producer(config, wait_s=1) as producer:
        handles = producer.submit_many("echo", [EchoJob(submissionID=i) for i in range(40)],
                                       chunk=8)
    assert len(handles) == 40 and {h.server.name for h in handles} == {up.address}


@pytest.mark.timeout(60)
def test_puts_never_answered_are_unknown_and_never_put_again(
    fresh_servers: list[Beanstalkd], prefix: str, store: Store
) -> None:
    paused, other = fresh_servers
    config = config_for([paused.address, other.address], prefix=prefix)
    tube = config.category("echo").submission
    with Producer(config, wait_s=0.5, recorder=store) as producer:
        producer.submit("echo", EchoJob(submissionID="warm"))  # connects to the first
        producer.submit("echo", EchoJob(submissionID="warm2"))  # and to the other
        assert paused.proc is not None
        paused.proc.send_signal(signal.SIGSTOP)
        with pytest.raises(SubmitIncomplete) as info:
            producer.submit_many("echo", [EchoJob(submissionID=f"j{i}") for i in range(30)],
                                 chunk=10)
    error = info.value
    # The chunk that went to the paused server (the first or the second: the round robin
    # starts at a random server) is unknown; the other two chunks are in.
    first = error.unknown[0]
    assert first in (0, 10) and error.unknown == list(range(first, first + 10))
    assert error.not_put == []
    assert [h is None for h in error.submitted] == [first <= i < first + 10 for i in range(30)]
    assert total_puts(other, tube) == 1 + 20  # the unknown ten were not put again there
    record = store.get(f"j{first + 3}")
    assert record is not None and record.state == "unknown"
    assert "do not submit them again" in str(error)
    paused.proc.send_signal(signal.SIGCONT)
