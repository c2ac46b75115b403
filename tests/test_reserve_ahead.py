"""Jobs reserved ahead in batches: leases like running ones, given back unrun at shutdown
without spending an attempt, cancellable before they run; several servers waited on at
once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import greenstalk

from bystroq import Outcome, Producer, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.errors import Cancelled
from bystroq.examples.echo import EchoJob
from bystroq.testing import Beanstalkd, config_for, config_text, wait_until
from bystroq.worker.intake import attempt_of
from tests.conftest import Tubes


def test_a_burst_of_short_jobs_runs_in_batches_each_once(
    config: LoadedConfig, tubes: Tubes
) -> None:
    with Producer(config) as producer:
        for i in range(300):
            producer.submit("echo", EchoJob(submissionID=i))
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        assert worker.run() == 0
        # (How big the batches grew depends on how fast the handlers ran; the sizing rules
        # are tests/test_batch_size.py's.)
    assert worker.counts[Outcome.COMPLETED] == 300
    events = tubes.events(config.category("echo").events)
    by_job: dict[int, list[str]] = {}
    for event in events:
        assert event["attempt"] == 1
        by_job.setdefault(event["submissionID"], []).append(event["event"])
    assert by_job == {i: ["started", "completed"] for i in range(300)}
    assert tubes.counts(config.category("echo").submission) == {
        "ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_max_jobs_counts_jobs_held_ahead(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        for i in range(50):
            producer.submit("echo", EchoJob(submissionID=i))
    with Worker(config, "echo", options=WorkerOptions(burst=True, max_jobs=20)) as worker:
        worker.run()
    assert worker.counts[Outcome.COMPLETED] == 20
    assert tubes.counts(config.category("echo").submission) == {
        "ready": 30, "reserved": 0, "delayed": 0, "buried": 0}


def test_a_job_cancelled_while_held_ahead_never_runs(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        handles = [producer.submit("echo", EchoJob(submissionID=i)) for i in range(3)]
    with Worker(config, "echo") as worker:
        slot = worker._slot(0)
        first = slot.reserve(0, most=3)
        assert first is not None and first.id == handles[0].job_id
        assert len(slot.intake.ahead) == 2  # held: leases the keeper knows
        assert worker.cancel(first.server, handles[1].job_id, Cancelled("not wanted"))
        assert slot.process(first) is Outcome.COMPLETED
        second = slot.reserve(0)
        assert second is not None and second.id == handles[1].job_id
        assert slot.process(second) is Outcome.CANCELLED
        third = slot.reserve(0)
        assert third is not None
        assert slot.process(third) is Outcome.COMPLETED
        slot.flush()
    events = [(e["submissionID"], e["event"]) for e in tubes.events(
        config.category("echo").events)]
    assert events == [(0, "started"), (0, "completed"), (1, "cancelled"), (2, "started"),
                      (2, "completed")]
    assert tubes.counts(config.category("echo").submission)["reserved"] == 0


class _Told:
    """A WorkerObserver that writes down what it is told."""

    def __init__(self) -> None:
        self.taken = self.left = self.waits = 0
        self.outcomes: list[Outcome] = []

    def reserve_waited(self, seconds: float, got_job: bool) -> None:
        self.taken += got_job

    def queue_waited(self, seconds: float) -> None:
        self.waits += 1

    def handler_ran(self, seconds: float) -> None:
        pass

    def job_left(self) -> None:
        self.left += 1

    def finished(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def buried(self) -> None:
        pass


def test_quiet_gives_back_jobs_held_ahead_and_counts_only_the_one_run(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """A quiet worker holds nothing ahead: its slot gives those jobs back unrun (they are
    neither taken nor finished for its observer) and waits, state `quiet`, until stopped."""
    submission = config.category("echo").submission
    with Producer(config) as producer:
        for i in range(3):
            producer.submit("echo", EchoJob(submissionID=i))
    told = _Told()
    options = WorkerOptions(observer=told, heartbeat_interval_s=None)
    with Worker(config, "echo", options=options) as worker:
        slot = worker._slot(0)
        first = slot.reserve(0, most=3)
        assert first is not None and len(slot.intake.ahead) == 2
        told.reserve_waited(0, True)  # as the slot loop does for the job it takes
        assert slot.process(first) is Outcome.COMPLETED
        told.job_left()
        worker.quiet()
        done: list[int] = []
        runner = threading.Thread(target=lambda: done.append(worker.run()))
        runner.start()
        try:
            wait_until(lambda: tubes.counts(submission)["ready"] == 2 and worker.state == "quiet")
            wait_until(lambda: told.outcomes == [Outcome.COMPLETED])
            assert tubes.counts(submission)["reserved"] == 0
        finally:
            worker.stop()
            runner.join(timeout=30)
        assert done == [0]
    assert (told.taken, told.left, told.waits) == (1, 1, 1)
    assert told.outcomes == [Outcome.COMPLETED]
    assert +worker.counts == {Outcome.COMPLETED: 1}
    events = [(e["submissionID"], e["event"]) for e in tubes.events(
        config.category("echo").events)]
    assert events == [(0, "started"), (0, "completed")]


def test_sigterm_gives_back_jobs_held_ahead_without_spending_an_attempt(
    server: Beanstalkd, prefix: str, tubes: Tubes, tmp_path: Path
) -> None:
    """Short jobs grow the batch; a long one is then reserved with later jobs held behind
    it. SIGTERM: the long one is released (it ran: that attempt counts), the held ones go
    back unrun (release, kick-job), and their next reserve is still their first attempt."""
    config_file = tmp_path / "c.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    config = config_for([server.address], prefix=prefix)
    submission, events = config.category("echo").submission, config.category("echo").events
    with Producer(config) as producer:
        for i in range(40):
            producer.submit("echo", EchoJob(submissionID=i))
        long_job = producer.submit("echo", EchoJob(submissionID="long", sleep_s=60))
        rest = [producer.submit("echo", EchoJob(submissionID=100 + i)) for i in range(20)]
    worker = subprocess.Popen(
        [sys.executable, "-m", "bystroq", "--json-logs", "--config", str(config_file),
         "listen", "--tube", "echo", "--drain-timeout", "0.5"],
        stderr=subprocess.PIPE, text=True)
    try:
        # 40 short jobs done and the long one started (81 events), with jobs held behind it.
        wait_until(lambda: tubes.counts(events)["ready"] >= 81, timeout_s=30)
        wait_until(lambda: tubes.counts(submission)["reserved"] >= 2, timeout_s=30)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    logs = [json.loads(line) for line in err.splitlines()]
    given = [line["jobs"] for line in logs if line["event"] == "jobs held ahead given back unrun"]
    assert given and given[0] >= 1
    assert tubes.counts(submission) == {"ready": 21, "reserved": 0, "delayed": 0, "buried": 0}
    with tubes.client() as client:
        kicked = 0
        for handle in rest:
            stats = client.stats_job(handle.job_id)
            assert stats["reserves"] - stats["kicks"] + stats["buries"] == 0  # none spent
            kicked += stats["kicks"]
        assert kicked == given[0]
        assert client.stats_job(long_job.job_id)["reserves"] == 1
        client.delete(long_job.job_id)  # it ran (and would run 60 s again)
    tubes.events(events)
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as again:
        again.run()
    seen = tubes.events(events)
    assert len(seen) == 40
    assert {e["attempt"] for e in seen} == {1}


def test_several_servers_are_waited_on_at_once(
    two_configs: LoadedConfig, server: Beanstalkd, second_server: Beanstalkd
) -> None:
    """A worker waiting for jobs takes one put on either server (a blocking reserve on
    each, not a poll of one after the other)."""
    config = two_configs
    submission = config.category("echo").submission
    with Worker(config, "echo") as worker:
        for target in (second_server, server, second_server):
            host, port = target.address.rsplit(":", 1)

            def put_later(host: str = host, port: int = int(port)) -> None:
                wait_until(lambda: _reserving(host, port, submission) >= 1, timeout_s=10)
                with greenstalk.Client((host, port), encoding=None, use=submission) as c:
                    c.put(b'{"submissionID": "late"}')

            putter = threading.Thread(target=put_later)
            putter.start()
            assert worker.step(wait_s=10) is Outcome.COMPLETED
            putter.join()


def _reserving(host: str, port: int, tube: str) -> int:
    """How many connections wait in a reserve on `tube` at that server."""
    with greenstalk.Client((host, port), encoding=None) as client:
        try:
            return int(client.stats_tube(tube)["current-waiting"])
        except greenstalk.NotFoundError:
            return 0


def test_an_operators_kick_of_a_failed_job_is_a_new_attempt(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """A kick that follows a bury cancels out: the job's next run is attempt 2, so the
    records take its events (a give-back, a kick with no bury, would keep attempt 1)."""
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="k", fail="once"))
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.FAILED
        with tubes.client(use=config.category("echo").submission) as client:
            client.kick_job(handle.job_id)
        assert worker.step() is Outcome.FAILED
    events = tubes.events(config.category("echo").events)
    assert [(e["event"], e["attempt"]) for e in events] == [
        ("started", 1), ("failed", 1), ("started", 2), ("failed", 2)]


def test_attempt_numbers_take_back_only_the_reserves_given_back() -> None:
    def stats(reserves: int, kicks: int, buries: int) -> bytes:
        return (b"---\nid: 1\nreserves: %d\ntimeouts: 0\nreleases: 0\nburies: %d\n"
                b"kicks: %d\n" % (reserves, buries, kicks))

    assert attempt_of(stats(1, 0, 0)) == 1
    assert attempt_of(stats(3, 2, 0)) == 1  # given back twice, then reserved again
    assert attempt_of(stats(2, 1, 1)) == 2  # failed, buried, kicked by an operator
    assert attempt_of(stats(4, 2, 1)) == 3  # and once given back
