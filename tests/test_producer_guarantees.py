"""What a caller of submit is told, and what its records say, when things break under it:
a put never answered, the records store gone, one server spelled two ways."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

from bystroq import Producer, ServersUnavailable, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.errors import StoreUnavailable, SubmitOutcomeUnknown
from bystroq.examples.echo import EchoJob
from bystroq.records import Store, model, open_store
from bystroq.records.model import Record, parse_event
from bystroq.servers import Server, peer_of
from bystroq.testing import Beanstalkd, config_for, wait_until
from tests.chaos.producer import PrivatePostgres, store_restart, unknown_put
from tests.conftest import Tubes, total_puts


def run_and_consume(config: LoadedConfig, store: Store) -> None:
    """Run every ready echo job, then apply every event to `store`."""
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with Consumer(config, store) as consumer:
        consumer.run(burst=True)


# -- 5. a put whose answer never comes -----------------------------------------------------


@pytest.mark.timeout(60)
def test_an_unanswered_put_is_unknown_never_put_again_and_its_record_follows_the_job(
    fresh_servers: list[Beanstalkd], prefix: str, store: Store
) -> None:
    config = config_for([s.address for s in fresh_servers], prefix=prefix)
    tube = config.category("echo").submission
    with Producer(config, wait_s=0.5, recorder=store) as producer:
        # The round robin starts at a random server: the third put goes where the first did.
        first = producer.submit("echo", EchoJob(submissionID="a")).server
        producer.submit("echo", EchoJob(submissionID="b"))  # then the other
        paused, other = sorted(fresh_servers, key=lambda s: s.port != first.port)
        assert paused.proc is not None
        paused.proc.send_signal(signal.SIGSTOP)
        with pytest.raises(SubmitOutcomeUnknown) as info:
            producer.submit("echo", EchoJob(submissionID="c"))  # the first again: no answer
    assert "do not submit it again" in str(info.value)
    assert total_puts(other, tube) == 1  # not put again on the server that answers
    record = store.get("c")
    assert record is not None and (record.state, record.queue_id) == ("unknown", None)
    paused.proc.send_signal(signal.SIGCONT)  # the bytes sent arrive: the job is in after all
    wait_until(lambda: total_puts(paused, tube) == 2)
    run_and_consume(config, store)
    record = store.get("c")
    assert record is not None and (record.state, record.attempts) == ("completed", 1)
    assert record.server == f"{paused.host}:{paused.port}" and record.queue_id is not None


def test_a_connection_the_server_closed_is_reopened_before_the_put(
    fresh_servers: list[Beanstalkd], prefix: str
) -> None:
    """A server restarted between two puts: the second goes over a new connection and is
    answered, rather than sent into a closed one and reported unknown."""
    server = fresh_servers[0]
    config = config_for([server.address], prefix=prefix)
    with Producer(config, wait_s=2) as producer:
        producer.submit("echo", EchoJob(submissionID=1))
        server.restart()
        handle = producer.submit("echo", EchoJob(submissionID=2))
    assert handle.job_id == 1  # a fresh server's first job


def event(name: str, queue_id: int | None, server: str = "s:1", **fields: Any) -> Any:
    body = {"event": name, "submissionID": "x", "queueID": queue_id, "attempt": 1, **fields}
    return parse_event(msgspec.json.encode(body), "echo", server)


def test_an_unknown_record_adopts_the_job_its_events_come_from() -> None:
    record = Record(submission_id="x", category="echo")
    assert model.outcome_unknown(record, "s:1", sent_at=10.0, reason="no answer", now=15.0)
    assert (record.state, record.run, record.server) == ("unknown", None, "s:1")
    assert record.state not in model.FINAL_STATES
    assert model.apply(record, event("progress", 7, data={"progress": 1}), now=16.0)
    assert (record.state, record.run) == ("started", "s:1/7")
    assert model.apply(record, event("completed", 7, seq=5), now=17.0)
    assert record.state == "completed"


def test_events_that_came_before_the_unknown_outcome_are_kept() -> None:
    """The job ran and its events were applied before the producer gave up waiting."""
    record = Record(submission_id="x", category="echo")
    model.apply(record, event("completed", 7), now=20.0)
    assert not model.outcome_unknown(record, "s:1", sent_at=10.0, reason="no answer", now=21.0)
    assert record.state == "completed"


def test_an_earlier_run_is_set_aside_by_an_unknown_put() -> None:
    record = Record(submission_id="x", category="echo")
    model.queued(record, 3, "s:1", at=1.0)
    model.apply(record, event("completed", 3), now=2.0)
    assert model.outcome_unknown(record, "s:1", sent_at=10.0, reason="no answer", now=15.0)
    assert (record.state, record.prior_runs, record.result) == ("unknown", ["s:1/3"], None)
    assert not model.apply(record, event("failed", 3, seq=9), now=16.0)  # the old job's
    assert model.apply(record, event("started", 8), now=17.0)
    assert record.run == "s:1/8"


def test_a_later_answered_put_turns_an_unknown_record_queued() -> None:
    record = Record(submission_id="x", category="echo")
    model.outcome_unknown(record, "s:1", sent_at=10.0, reason="no answer", now=15.0)
    model.queued(record, 9, "s:2", at=20.0)
    assert (record.state, record.run, record.reason) == ("queued", "s:2/9", None)


# -- 6. the records store going away ------------------------------------------------------


class Outage:
    """A recorder whose database is away while `down` is set (StoreUnavailable, as the
    store raises it); otherwise it passes every call to the real store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("records database is down")
            return method(*args, **kwargs)

        return call


def test_submit_succeeds_while_the_store_is_down_and_logs_the_outage_once(
    config: LoadedConfig, tubes: Tubes, store: Store
) -> None:
    recorder = Outage(store)
    with structlog.testing.capture_logs() as logs, Producer(config, recorder=recorder) as producer:
        recorder.down = True
        handles = [producer.submit("echo", EchoJob(submissionID=f"d{i}")) for i in range(5)]
        recorder.down = False
        producer.submit("echo", EchoJob(submissionID="after"))
    assert [h.job_id for h in handles] == sorted({h.job_id for h in handles})
    assert tubes.counts(config.category("echo").submission)["ready"] == 6  # every job is in
    outage = [(e["log_level"], e["event"].split(":")[0], e.get("records_missed"))
              for e in logs if "records store" in e["event"]]
    assert outage == [("warning", "records store unavailable", None),
                      ("info", "records store available again", 5)]
    assert store.get("d0") is None and store.get("after") is not None
    run_and_consume(config, store)  # the records missed are made from the jobs' events
    assert {store.get(f"d{i}").state for i in range(5)} == {"completed"}  # type: ignore


def test_a_failed_put_raises_its_own_error_while_the_store_is_down(
    prefix: str, store: Store
) -> None:
    config = config_for([Beanstalkd().address], prefix=prefix)  # nobody listens
    recorder = Outage(store)
    recorder.down = True
    with (
        Producer(config, wait_s=0.2, recorder=recorder) as producer,
        pytest.raises(ServersUnavailable),
    ):
        producer.submit("echo", EchoJob(submissionID="x"))


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    try:
        cluster = PrivatePostgres()
    except (RuntimeError, KeyError, OSError) as exc:
        pytest.skip(f"no private PostgreSQL cluster here: {exc}")
    with cluster:
        yield cluster.start()


@pytest.mark.timeout(90)
def test_submit_succeeds_while_the_records_postgres_is_stopped(
    config: LoadedConfig, private_postgres: PrivatePostgres
) -> None:
    with open_store(private_postgres.url) as store, Producer(config, recorder=store) as producer:
        producer.submit("echo", EchoJob(submissionID="before"))
        private_postgres.stop()
        during = [producer.submit("echo", EchoJob(submissionID=f"d{i}")) for i in range(3)]
        private_postgres.start()
    assert len(during) == 3
    with open_store(private_postgres.url) as store:
        run_and_consume(config, store)
        states = {r.submission_id: r.state for r in store.list(limit=10)}
    assert states == {"before": "completed", "d0": "completed", "d1": "completed",
                      "d2": "completed"}


# -- 7. one server, two spellings ---------------------------------------------------------


def test_a_server_is_named_by_the_address_connected_to(server: Beanstalkd, prefix: str) -> None:
    config = config_for([f"localhost:{server.port}"], prefix=prefix)
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID=1))
    assert handle.server.name == f"127.0.0.1:{server.port}"


def test_ipv6_names_are_bracketed() -> None:
    assert Server("::1", 11300).name == "[::1]:11300"


def test_an_ipv4_mapped_peer_is_named_as_ipv4(server: Beanstalkd) -> None:
    try:
        sock = socket.socket(socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 sockets here: {exc}")
    with sock:
        try:
            sock.connect(("::ffff:127.0.0.1", server.port))
        except OSError as exc:
            pytest.skip(f"no IPv4-mapped IPv6 here: {exc}")
        assert peer_of(sock).name == f"127.0.0.1:{server.port}"


def test_submit_with_localhost_consume_with_the_ip(
    server: Beanstalkd, prefix: str, tmp_path: Path
) -> None:
    by_name = config_for([f"localhost:{server.port}"], prefix=prefix)
    by_ip = config_for([f"127.0.0.1:{server.port}"], prefix=prefix)
    with open_store(f"sqlite:///{tmp_path / 'records.db'}") as store:
        with Producer(by_name, recorder=store) as producer:
            producer.submit("echo", EchoJob(submissionID="named"))
        run_and_consume(by_ip, store)
        record = store.get("named")
    assert record is not None and record.state == "completed"


# -- chaos ---------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(60)
def test_chaos_put_cut_off_then_healed() -> None:
    report = unknown_put(jobs=20, wait_s=0.5)
    assert (report.submitted, report.completed, report.lost) == (20, 20, 0)
    assert (report.ran_twice, report.wrong_records) == (0, 0)
    assert report.notes == ["caller told unknown, record meanwhile unknown, other server "
                            "puts 1, puts 20 for 20 submissions"]


@pytest.mark.chaos
@pytest.mark.timeout(120)
def test_chaos_records_postgres_restarts() -> None:
    try:
        report = store_restart(jobs=30)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    assert report.ok and report.completed == 30 and report.ran_twice == 0
