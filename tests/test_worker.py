from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import greenstalk
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from bystroq import (
    BaseMessage,
    CompletedJobMessage,
    Outcome,
    Producer,
    SubmittedJobMessage,
    Worker,
    WorkerOptions,
    listen,
)
from bystroq.cli import main
from bystroq.config import LoadedConfig
from bystroq.errors import ListenerError
from bystroq.examples.annotation import AnnotationJobData
from bystroq.examples.echo import EchoJob
from bystroq.progress import ProgressPublisher
from bystroq.servers import Reserved
from bystroq.testing import Beanstalkd, config_for, config_text, wait_until
from bystroq.worker import Listener, load_listener
from bystroq.worker.runners import ProcessRunner
from tests.conftest import Tubes

# 2 KB of nested arrays in a field: decoding raises RecursionError unless it is caught.
DEEP = b'{"submissionID": 1, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"


def events_tube(config: LoadedConfig, category: str = "echo") -> str:
    return config.category(category).events


def test_happy_path_events_in_order_and_job_gone(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="s1", message="hi", progress=3))
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.COMPLETED
        assert worker.step() is Outcome.NONE
    events = tubes.events(events_tube(config))
    assert [e["event"] for e in events] == ["started", "progress", "progress", "progress",
                                            "completed"]
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4]
    assert [e["data"] for e in events[1:4]] == [{"progress": n, "skipped": 0} for n in (1, 2, 3)]
    assert all(e["submissionID"] == "s1" and e["queueID"] == handle.job_id and e["attempt"] == 1
               for e in events)
    assert events[-1]["message"] == "hi"
    assert tubes.counts(config.category("echo").submission) == {
        "ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    with tubes.client() as client, pytest.raises(greenstalk.NotFoundError):
        client.peek(handle.job_id)


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "body is not valid JSON"),
    (b'{"submissionID": 1, "message": ', "body is not valid JSON"),
    (b'{"submissionID": 1, "sleep_s": "long"}', "field `sleep_s`: Expected `float`"),
    (b'{"message": "no id"}', "missing required field `submissionID`"),
    (DEEP, "nested too deeply"),
])
def test_invalid_job_is_buried_with_queue_id_and_worker_goes_on(
    config: LoadedConfig, tubes: Tubes, body: bytes, reason: str
) -> None:
    with Producer(config) as producer:
        bad = producer.submit("echo", body)
        producer.submit("echo", EchoJob(submissionID="next"))
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.INVALID
        assert worker.step() is Outcome.COMPLETED
    events = tubes.events(events_tube(config))
    assert events[0]["event"] == "failed" and events[0]["queueID"] == bad.job_id
    assert "submissionID" not in events[0]
    assert reason in str(events[0]["reason"]) and "job type EchoJob" in str(events[0]["reason"])
    assert [e["event"] for e in events[1:]] == ["started", "completed"]
    with tubes.client(use=config.category("echo").submission) as client:
        assert client.peek_buried().id == bad.job_id


def test_deeply_nested_body_does_not_stop_the_worker(config: LoadedConfig, tubes: Tubes) -> None:
    """The running loop (not only `step`): the slot buries the job and takes the next."""
    with Producer(config) as producer:
        bad = producer.submit("echo", DEEP)
        producer.submit("echo", EchoJob(submissionID="after"))
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        assert worker.run() == 0
        assert worker.counts[Outcome.INVALID] == 1 and worker.counts[Outcome.COMPLETED] == 1
    events = tubes.events(events_tube(config))
    assert [e["event"] for e in events] == ["failed", "started", "completed"]
    assert events[0]["queueID"] == bad.job_id
    assert "nested too deeply" in str(events[0]["reason"])
    with tubes.client() as client:
        assert client.stats_job(bad.job_id)["state"] == "buried"


def test_submit_json_too_deep_is_a_one_line_error(server: Beanstalkd, prefix: str,
                                                   tmp_path: Path, tubes: Tubes) -> None:
    config_file = tmp_path / "beanstalk.yml"
    config_file.write_text(config_text([server.address], prefix=prefix))
    result = CliRunner().invoke(main, ["--config", str(config_file), "submit", "--tube", "echo",
                                       "--no-records", "--json", DEEP.decode()])
    assert result.exit_code != 0 and not isinstance(result.exception, RecursionError)
    assert result.stderr.count("\n") == 1 and "nested too deeply" in result.stderr
    assert "nothing was submitted" in result.stderr
    assert tubes.counts(f"{prefix}echo")["ready"] == 0


@pytest.mark.parametrize(("job", "reason"), [
    (EchoJob(submissionID=1, fail="boom"), "RuntimeError: boom"),
    (EchoJob(submissionID=1, fail_completed=True),
     "ValueError: completed_msg_fn was asked to fail"),
])
def test_failures_publish_failed_and_bury(
    config: LoadedConfig, tubes: Tubes, job: EchoJob, reason: str
) -> None:
    with Producer(config) as producer:
        handle = producer.submit("echo", job)
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.FAILED
    events = tubes.events(events_tube(config))
    assert [e["event"] for e in events] == ["started", "failed"]
    assert events[1]["reason"] == reason and events[1]["submissionID"] == 1
    assert tubes.counts(config.category("echo").submission)["buried"] == 1
    with tubes.client() as client:
        assert client.stats_job(handle.job_id)["state"] == "buried"


def test_long_job_outlives_short_ttr_and_runs_once(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """A 2 s TTR job running 6 s: touched on time, never handed to anyone else."""
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID="long", sleep_s=6), ttr=2)
    stolen: list[int] = []
    done, running = threading.Event(), threading.Event()
    echo = load_listener("bystroq.examples.echo")

    def handler(publisher: ProgressPublisher, job: EchoJob) -> str:
        running.set()
        return str(echo.handler_fn(publisher, job))

    listener = Listener(EchoJob, handler, echo.submit_msg_fn, echo.completed_msg_fn)

    def rival() -> None:
        assert running.wait(20)
        with tubes.client(watch=config.category("echo").submission) as client:
            while not done.is_set():
                with contextlib.suppress(greenstalk.TimedOutError):
                    stolen.append(client.reserve(1).id)

    thread = threading.Thread(target=rival)
    thread.start()
    try:
        with Worker(config, "echo", listener) as worker:
            assert worker.step() is Outcome.COMPLETED
    finally:
        done.set()
        thread.join()
    assert stolen == []
    events = tubes.events(events_tube(config))
    assert [(e["event"], e["attempt"]) for e in events] == [("started", 1), ("completed", 1)]


def test_lost_lease_reports_nothing(config: LoadedConfig, tubes: Tubes) -> None:
    """The TTR runs out (no touching), someone else deletes the job: no result is sent."""
    deleted = threading.Event()
    echo = load_listener("bystroq.examples.echo")

    def handler(publisher: ProgressPublisher, job: EchoJob) -> str:
        assert deleted.wait(20)
        return "too late"

    listener = Listener(EchoJob, handler, echo.submit_msg_fn, echo.completed_msg_fn)
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="lost"), ttr=2)

    def thief() -> None:
        submission = config.category("echo").submission
        wait_until(lambda: tubes.counts(submission)["reserved"] == 1)
        with tubes.client(watch=submission) as client:
            # Short reserves, again and again: each wakes a server that has not yet
            # noticed the expired reservation. (With a TTR of 1 s every touch falls in
            # beanstalkd's deadline-soon second, after which it sometimes never expires
            # the job: hence 2 s.)
            for _ in range(20):
                try:
                    job = client.reserve(1)
                    break
                except greenstalk.TimedOutError:
                    continue
            assert job.id == handle.job_id
            client.delete(job)
        deleted.set()

    thread = threading.Thread(target=thief)
    thread.start()
    with Worker(config, "echo", listener, WorkerOptions(touch_interval_s=3600)) as worker:
        assert worker.step() is Outcome.LOST
    thread.join()
    assert [e["event"] for e in tubes.events(events_tube(config))] == ["started"]


def _lose_while_paused(job: Reserved, rival: greenstalk.Client[bytes], since: float) -> None:
    """What a pause longer than the TTR leads to: the server releases the job (done here
    over the job's own connection, as beanstalkd does when the TTR runs out, since
    beanstalkd 1.12 does not always time out the job of an idle connection), another
    worker reserves it, and the TTR has passed since the reserve."""
    job.conn.client.release(greenstalk.Job(job.id, b""))
    assert rival.reserve(5).id == job.id
    wait_until(lambda: time.monotonic() - since > 1.0)


def test_paused_after_the_reserve_past_the_ttr_reports_nothing(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """A pause (GC, SIGSTOP) between the reserve and processing, longer than the TTR: the
    lease's age counts from the reserve, so the worker finds the job gone and is silent."""
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="paused"), ttr=1)
    with Worker(config, "echo") as worker, \
            tubes.client(watch=config.category("echo").submission) as rival:
        slot = worker._slot(0)
        asked_at = time.monotonic()
        job = slot.reserve(1)
        assert job is not None and job.id == handle.job_id
        _lose_while_paused(job, rival, asked_at)
        assert slot.process(job) is Outcome.LOST
        assert slot.flush() is None
        assert tubes.events(events_tube(config)) == []


def _losing_listener(lose: list[Any]) -> Listener:
    """The echo listener whose handler, at its end, calls `lose[0]()` (the job is lost
    between the handler's end and its completed event)."""
    echo = load_listener("bystroq.examples.echo")

    def handler(publisher: ProgressPublisher, job: EchoJob) -> str:
        lose[0]()
        return "done"

    return Listener(EchoJob, handler, echo.submit_msg_fn, echo.completed_msg_fn)


def test_paused_before_the_completed_event_past_the_ttr_reports_nothing_more(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """A pause between the handler's end and its completed event, longer than the TTR, and
    the job is someone else's: the event is not put."""
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID="paused"), ttr=1)
    lose: list[Any] = []
    with Worker(config, "echo", _losing_listener(lose)) as worker, \
            tubes.client(watch=config.category("echo").submission) as rival:
        slot = worker._slot(0)
        asked_at = time.monotonic()
        job = slot.reserve(1)
        assert job is not None
        lose.append(lambda: _lose_while_paused(job, rival, asked_at))
        assert slot.process(job) is Outcome.LOST
        assert slot.flush() is None
        assert [e["event"] for e in tubes.events(events_tube(config))] == ["started"]


def test_events_written_as_the_job_is_lost_are_deleted(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """The lease looks fresh, but the job was lost just before the events were written (as
    when a silent network delays them past the TTR): the touch in front of each event says
    so, and the events the server stored anyway are deleted."""
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="late"), ttr=1)
    with Worker(config, "echo") as worker, \
            tubes.client(watch=config.category("echo").submission) as rival:
        slot = worker._slot(0)
        job = slot.reserve(1)
        assert job is not None
        job.conn.client.release(greenstalk.Job(job.id, b""))
        assert rival.reserve(5).id == handle.job_id  # at once: no time passed
        assert slot.process(job) is Outcome.COMPLETED  # the answers are not read yet
        assert slot.flush() is Outcome.LOST
        assert tubes.events(events_tube(config)) == []


def test_a_completed_event_written_as_the_job_is_lost_is_deleted(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """The job is lost just before its completed event is written (the lease still looks
    fresh): the touch in front of the event says so, and the event is deleted."""
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="late"), ttr=1)
    lose: list[Any] = []
    with Worker(config, "echo", _losing_listener(lose)) as worker, \
            tubes.client(watch=config.category("echo").submission) as rival:
        slot = worker._slot(0)
        job = slot.reserve(1)
        assert job is not None

        def lose_now() -> None:
            job.conn.client.release(greenstalk.Job(job.id, b""))  # reads the started answers
            assert rival.reserve(5).id == handle.job_id

        lose.append(lose_now)
        assert slot.process(job) is Outcome.COMPLETED  # its event waits for the next write
        assert slot.flush() is Outcome.LOST
        assert job.outcome is Outcome.LOST
        assert [e["event"] for e in tubes.events(events_tube(config))] == ["started"]


@pytest.fixture
def small_server() -> Iterator[Beanstalkd]:
    """A server whose max-job-size is 1,000 bytes."""
    server = Beanstalkd(max_job_size=1000).start()
    yield server
    server.kill()


def test_a_result_too_big_for_the_server_fails_the_job_at_once(
    small_server: Beanstalkd, prefix: str
) -> None:
    """No release and five more runs: one failed event that names the size and the limit."""
    config = config_for([small_server.address], prefix=prefix,
                        extra="max_attempts: 5\nretry: {base_s: 0, max_s: 0}")
    tubes = Tubes(small_server.address)
    with Producer(config) as producer:
        handle = producer.submit("echo", b'{"submissionID": "big", "message": "%s"}' % (
            b"x" * 960))  # 996 bytes: the job fits, its completed event does not
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.FAILED
        assert worker.step() is Outcome.NONE
    events = tubes.events(events_tube(config))
    assert [(e["event"], e["seq"]) for e in events] == [("started", 0), ("failed", 1)]
    reason = str(events[1]["reason"])
    assert re.search(r"the completed event is \d+ bytes, over the server's max-job-size of "
                     r"1000 bytes", reason), reason
    with tubes.client() as client:
        assert client.stats_job(handle.job_id)["state"] == "buried"


def test_a_failed_event_too_big_is_replaced_by_one_that_says_so(
    small_server: Beanstalkd, prefix: str
) -> None:
    config = config_for([small_server.address], prefix=prefix)
    tubes = Tubes(small_server.address)
    with Producer(config) as producer:
        handle = producer.submit("echo", b'{"submissionID": "big", "fail": "%s"}' % (
            b"x" * 960))
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.FAILED
    events = tubes.events(events_tube(config))
    assert [e["event"] for e in events] == ["started", "failed"]
    assert events[1]["submissionID"] == "big" and events[1]["queueID"] == handle.job_id
    assert "the failed event is" in str(events[1]["reason"])
    with tubes.client() as client:
        assert client.stats_job(handle.job_id)["state"] == "buried"


def test_two_servers_all_jobs_processed(
    two_configs: LoadedConfig, server: Beanstalkd, second_server: Beanstalkd
) -> None:
    with Producer(two_configs) as producer:
        handles = [producer.submit("echo", EchoJob(submissionID=i)) for i in range(20)]
    assert {h.server.port for h in handles} == {server.port, second_server.port}
    with Worker(two_configs, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    assert worker.counts[Outcome.COMPLETED] == 20
    completed = []
    for address in (server.address, second_server.address):
        events = Tubes(address).events(two_configs.category("echo").events)
        completed += [e["submissionID"] for e in events if e["event"] == "completed"]
        # Events go back to the server the job came from.
        assert {e["queueID"] for e in events} <= {
            h.job_id for h in handles if h.server.name == address}
    assert sorted(completed) == list(range(20))


def test_concurrency_overlaps_four_jobs(config: LoadedConfig, tubes: Tubes) -> None:
    """Four handlers meet at a barrier: only possible if all four run at once."""
    barrier = threading.Barrier(4, timeout=20)
    echo = load_listener("bystroq.examples.echo")

    def handler(publisher: ProgressPublisher, job: EchoJob) -> str:
        barrier.wait()
        return "met"

    listener = Listener(EchoJob, handler, echo.submit_msg_fn, echo.completed_msg_fn)
    with Producer(config) as producer:
        for i in range(4):
            producer.submit("echo", EchoJob(submissionID=i))
    options = WorkerOptions(concurrency=4, max_jobs=4)
    with Worker(config, "echo", listener, options) as worker:
        assert worker.run() == 0
    assert worker.counts[Outcome.COMPLETED] == 4
    assert not barrier.broken


def test_process_isolation_survives_os_exit(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID="crash", exit_code=3))
        producer.submit("echo", EchoJob(submissionID="after", message="still here"))
    with Worker(config, "echo", options=WorkerOptions(isolation="process")) as worker:
        assert worker.step() is Outcome.FAILED
        assert worker.step() is Outcome.COMPLETED
    events = tubes.events(events_tube(config))
    assert [(e["submissionID"], e["event"]) for e in events] == [
        ("crash", "started"), ("crash", "failed"), ("after", "started"), ("after", "completed")]
    assert events[1]["reason"] == "HandlerDied: handler process exited with exit code 3"
    assert events[3]["message"] == "still here"


def test_process_isolation_reuses_its_child(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        for i in range(3):
            producer.submit("echo", EchoJob(submissionID=i, progress=2))
    with Worker(config, "echo", options=WorkerOptions(isolation="process")) as worker:
        pids = set()
        for _ in range(3):
            assert worker.step() is Outcome.COMPLETED
            runner = worker._slot(0).runner
            assert isinstance(runner, ProcessRunner)
            pids.add(runner.pid)
    assert len(pids) == 1
    events = tubes.events(events_tube(config))
    assert [e["event"] for e in events[:4]] == ["started", "progress", "progress", "completed"]
    assert [e["seq"] for e in events[:4]] == [0, 1, 2, 3]


def test_process_isolation_kills_handler_when_lease_lost(
    config: LoadedConfig, tubes: Tubes, tmp_path: Path
) -> None:
    """With the lease gone, the child (and its own children) are killed at once."""
    with Producer(config) as producer:
        producer.submit("echo", EchoJob(submissionID="slow", sleep_s=60), ttr=1)

    def thief() -> None:
        submission = config.category("echo").submission
        wait_until(lambda: tubes.counts(submission)["reserved"] == 1)
        with tubes.client(watch=submission) as client:
            client.delete(client.reserve(10))

    thread = threading.Thread(target=thief)
    thread.start()
    options = WorkerOptions(isolation="process", touch_interval_s=2.0)
    with Worker(config, "echo", options=options) as worker:
        assert worker.step() is Outcome.LOST
    thread.join()
    assert [e["event"] for e in tubes.events(events_tube(config))] == ["started"]


# A Bystro-style listener, run through listen() with Bystro's own arguments.
class BystroJob(BaseMessage, frozen=True, kw_only=True):
    inputFilePath: str


class BystroDone(CompletedJobMessage, frozen=True, kw_only=True):
    results: dict[str, Any]


def test_bystro_style_listen(server: Beanstalkd, prefix: str, tubes: Tubes) -> None:
    yaml_conf = {"addresses": [server.address],
                 "tubes": {"annotation": {"submission": f"{prefix}annotation",
                                          "events": f"{prefix}annotation_events"}}}

    def handler_fn(publisher: ProgressPublisher, job: BystroJob) -> dict[str, Any]:
        from bystroq import get_progress_reporter
        reporter = get_progress_reporter(publisher)
        reporter.increment(10, force=True)
        return {"path": job.inputFilePath}

    with tubes.client(use=f"{prefix}annotation") as client:
        client.put(b'{"submissionID": 42, "inputFilePath": "/data/x.vcf"}')
    code = listen(BystroJob, handler_fn, lambda job: SubmittedJobMessage(
        submissionID=job.submissionID), lambda job, result: BystroDone(
        submissionID=job.submissionID, results=result), yaml_conf, "annotation", burst=True)
    assert code == 0
    events = tubes.events(f"{prefix}annotation_events")
    assert [e["event"] for e in events] == ["started", "progress", "completed"]
    assert events[1]["data"] == {"progress": 10, "skipped": 0}
    assert events[2]["results"] == {"path": "/data/x.vcf"}


def test_annotation_listener_reports_totals(
    config: LoadedConfig, tubes: Tubes, tmp_path: Path
) -> None:
    source = tmp_path / "in.tsv"
    rows = ["#chrom\tpos\tref\talt", "chr1\t100\tA\tG", "chr1\t200\tC\tA", "chr2\t5\tAT\tA",
            "chr2\tx\tA\tG", "short"]
    source.write_text("\n".join(rows) + "\n")
    job = AnnotationJobData(submissionID=1, inputFilePath=str(source),
                            outputBasePath=str(tmp_path / "out" / "run1"))
    with Producer(config) as producer:
        producer.submit("annotation", job)
    with Worker(config, "annotation") as worker:
        assert worker.step() is Outcome.COMPLETED
    events = tubes.events(events_tube(config, "annotation"))
    assert events[-1]["results"] == {"records": 5, "annotated": 3, "skipped": 2,
                                     "outputFile": str(tmp_path / "out/run1.annotation.tsv")}
    # The last count always reaches the server (flushed after the handler).
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert progress[-1] == {"progress": 3, "skipped": 2}
    out = (tmp_path / "out/run1.annotation.tsv").read_text().splitlines()
    assert out[1:] == ["chr1\t100\tA\tG\tSNP\ttransition", "chr1\t200\tC\tA\tSNP\ttransversion",
                       "chr2\t5\tAT\tA\tDEL\t"]


def test_max_jobs_stops_the_loop(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        for i in range(5):
            producer.submit("echo", EchoJob(submissionID=i))
    with Worker(config, "echo", options=WorkerOptions(max_jobs=3)) as worker:
        assert worker.run() == 0
    assert worker.counts[Outcome.COMPLETED] == 3
    assert tubes.counts(config.category("echo").submission)["ready"] == 2


def test_worker_waits_out_a_server_that_is_down(prefix: str, tubes: Tubes) -> None:
    dead = Beanstalkd()  # never started: nothing listens on its port
    live = Beanstalkd().start()
    try:
        config = config_for([dead.address, live.address], prefix=prefix)
        with Producer(config) as producer:
            for i in range(4):
                producer.submit("echo", EchoJob(submissionID=i))
        options = WorkerOptions(burst=True, concurrency=4)
        with capture_logs() as logs, Worker(config, "echo", options=options) as worker:
            worker.run()
        assert worker.counts[Outcome.COMPLETED] == 4
        # Four slots and a control listener met the dead server: one line says so.
        down = [e for e in logs if e["event"] == "server unreachable"]
        assert [e["server"] for e in down] == [dead.address]
    finally:
        live.kill()


def test_unknown_category_is_a_clear_error(config: LoadedConfig) -> None:
    from bystroq.errors import UnknownCategory
    with pytest.raises(UnknownCategory, match="known categories: annotation, echo"):
        Worker(config, "nope")


def test_wait_until_polls() -> None:
    box: list[int] = []
    threading.Timer(0.05, lambda: box.append(1)).start()
    wait_until(lambda: box, timeout_s=5)
    assert box == [1]


def echo_listener(**overrides: Any) -> Listener:
    loaded = load_listener("bystroq.examples.echo")
    fields = {name: getattr(loaded, name) for name in (
        "job_data_type", "handler_fn", "submit_msg_fn", "completed_msg_fn", "failed_msg_fn",
        "module")}
    return Listener(**{**fields, **overrides})


def test_submit_msg_fn_raising_fails_the_job_not_the_worker(
    config: LoadedConfig, tubes: Tubes
) -> None:
    def broken_submit_msg_fn(job: EchoJob) -> SubmittedJobMessage:
        if job.message == "boom":
            raise KeyError("no such field")
        return SubmittedJobMessage(submissionID=job.submissionID)

    with Producer(config) as producer:
        first = producer.submit("echo", EchoJob(submissionID=1, message="boom"), priority=7)
        producer.submit("echo", EchoJob(submissionID=2))
    listener = echo_listener(submit_msg_fn=broken_submit_msg_fn)
    with Worker(config, "echo", listener, WorkerOptions(burst=True)) as worker:
        assert worker.run() == 0
    assert worker.counts[Outcome.FAILED] == 1 and worker.counts[Outcome.COMPLETED] == 1
    events = tubes.events(events_tube(config))
    assert [(e["event"], e["submissionID"]) for e in events] == [
        ("failed", 1), ("started", 2), ("completed", 2)]
    assert events[0]["reason"] == "KeyError: 'no such field'"
    with tubes.client() as client:
        stats = client.stats_job(first.job_id)
    assert (stats["state"], stats["pri"]) == ("buried", 7)  # the job keeps its priority


def test_a_connection_lost_while_the_handler_runs_reports_nothing(
    config: LoadedConfig, tubes: Tubes
) -> None:
    """The connection drops and is made again while the handler runs: the server released
    the job, so this worker must not report it, even though the TTR has not run out."""
    workers: list[Worker] = []

    def handler_fn(publisher: ProgressPublisher, job: EchoJob) -> str:
        conn = workers[0]._slots[0].conns[0]
        with conn.lock:
            conn.failed(OSError("network blip"))
            conn._retry_at = 0.0
            assert conn.client is not None  # reconnects at once: a new connection
        return "done"

    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="blip"))
    with Worker(config, "echo", echo_listener(handler_fn=handler_fn)) as worker:
        workers.append(worker)
        assert worker.step() is Outcome.LOST
    assert [e["event"] for e in tubes.events(events_tube(config))] == ["started"]
    with tubes.client() as client:
        assert client.stats_job(handle.job_id)["state"] == "ready"


def test_process_isolation_refuses_a_listener_it_cannot_import(config: LoadedConfig) -> None:
    def handler_fn(publisher: ProgressPublisher, job: EchoJob) -> str:
        return "not the module's"

    with pytest.raises(ListenerError, match="is not the function this worker was given"):
        Worker(config, "echo", echo_listener(handler_fn=handler_fn),
               WorkerOptions(isolation="process"))
    with pytest.raises(ListenerError, match="not __main__"):
        Worker(config, "echo", echo_listener(module="__main__"),
               WorkerOptions(isolation="process"))


def test_a_reply_cut_short_is_a_lost_connection_not_a_crash(prefix: str) -> None:
    """A server that dies mid-reply (here a fake one: it sends half a job and closes)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                if line.startswith(b"use"):
                    conn.sendall(b"USING x\r\n")
                elif line.startswith(b"watch"):
                    conn.sendall(b"WATCHING 2\r\n")
                elif line.startswith(b"ignore"):
                    conn.sendall(b"WATCHING 1\r\n")
                elif line.startswith(b"reserve"):
                    conn.sendall(b"RESERVED 5 10\r\nabc")
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        config = config_for([f"127.0.0.1:{port}"], prefix=prefix)
        with capture_logs() as logs, Worker(config, "echo") as worker:
            assert worker.step() is Outcome.NONE
        assert [e["error"] for e in logs if e["event"] == "server unreachable"] == [
            "the server closed the connection mid-body"]
    finally:
        thread.join(timeout=5)
        listener.close()
