"""bystroq.bystro, the drop-in for Bystro's `bystro.beanstalkd.worker` and `.messages`.

The expectations are what Bystro's code does (messages, QueueConf, the reporter, listen),
checked against a real beanstalkd: a listener module written in Bystro's style runs
through `listen` in a subprocess, inline and in a forked child per job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bystroq import Listener, Worker, WorkerOptions, bystro
from bystroq.bystro import (
    BaseMessage,
    CompletedJobMessage,
    Event,
    FailedJobMessage,
    InvalidJobMessage,
    ProgressData,
    ProgressMessage,
    ProgressPublisher,
    ProgressStringMessage,
    QueueConf,
    SubmissionID,
    SubmittedJobMessage,
    get_progress_reporter,
)
from bystroq.config import parse
from bystroq.consumer import Consumer
from bystroq.messages import JobDecoder, record_key
from bystroq.records import Store
from bystroq.records.model import orphan_id
from bystroq.testing import Beanstalkd, free_port, wait_until
from tests.conftest import Tubes

LISTENER = Path(__file__).with_name("bystro_style_listener.py")

# (message, its wire JSON as Bystro writes it: camelCase, fields in declaration order)
WIRE: list[tuple[Any, dict[str, Any]]] = [
    (BaseMessage("s1"), {"submissionId": "s1"}),
    (SubmittedJobMessage("s1"), {"submissionId": "s1", "event": "started"}),
    (CompletedJobMessage(2), {"submissionId": 2, "event": "completed"}),
    (FailedJobMessage("s1", "foo"), {"submissionId": "s1", "reason": "foo", "event": "failed"}),
    (InvalidJobMessage(1, "foo"), {"queueId": 1, "reason": "foo", "event": "failed"}),
    (ProgressMessage("s1", data=ProgressData(1, 2)),
     {"submissionId": "s1", "event": "progress", "data": {"progress": 1, "skipped": 2}}),
    (ProgressStringMessage("s1", data="text"),
     {"submissionId": "s1", "data": "text", "event": "progress"}),
]


@pytest.mark.parametrize(("message", "wire"), WIRE)
def test_messages_are_bystros_wire_byte_for_byte(message: Any, wire: dict[str, Any]) -> None:
    assert msgspec.json.encode(message) == msgspec.json.encode(wire)
    assert msgspec.json.decode(msgspec.json.encode(wire), type=type(message)) == message


@pytest.mark.parametrize(("message", "wire"), WIRE)
def test_messages_decode_from_the_older_spelling_too(message: Any,
                                                     wire: dict[str, Any]) -> None:
    older = {{"submissionId": "submissionID", "queueId": "queueID"}.get(k, k): v
             for k, v in wire.items()}
    assert JobDecoder(type(message)).decode(msgspec.json.encode(older)) == message


def test_messages_have_bystros_shapes() -> None:
    assert SubmittedJobMessage("a") == SubmittedJobMessage(submission_id="a")
    assert SubmittedJobMessage.keys_with_types() == {"submission_id": SubmissionID,
                                                     "event": Event}
    assert InvalidJobMessage.keys_with_types() == {"queue_id": int, "reason": str,
                                                   "event": Event}
    assert not issubclass(InvalidJobMessage, BaseMessage)
    with pytest.raises(AttributeError, match="immutable type: 'FailedJobMessage'"):
        FailedJobMessage("a", "r").reason = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="Missing required argument 'reason'"):
        FailedJobMessage("a")  # type: ignore[call-arg]
    progress = ProgressMessage("a")
    progress.data.progress += 5  # a frozen message, mutable counts: the reporter's way
    assert msgspec.json.decode(msgspec.json.encode(progress))["data"]["progress"] == 5

    class JobData(BaseMessage, frozen=True):  # inherits frozen and camelCase
        out_dir: str

    assert msgspec.json.encode(JobData("x", "/o")) == b'{"submissionId":"x","outDir":"/o"}'
    with pytest.raises(AttributeError):
        JobData("x", "/o").out_dir = "p"  # type: ignore[misc]
    assert str.__eq__(Event.STARTED, "started")  # a str enum, as Bystro's


def test_queue_conf_is_bystros_and_leaves_the_callers_dict_alone() -> None:
    raw: dict[str, Any] = {"addresses": ["10.0.0.1:11300", "h2:11301"],
           "tubes": {"count": {"submission": "count", "events": "count_events"}}}
    before = msgspec.json.encode(raw)
    conf = QueueConf(**raw)
    assert conf.split_host_port() == (["10.0.0.1", "h2"], ["11300", "11301"])
    assert conf.tubes["count"]["submission"] == "count"
    loaded = bystro.loaded_config(conf)
    assert loaded.category("count").events == "count_events"
    assert loaded.config.wire == "submissionId"
    assert msgspec.json.encode(raw) == before
    with pytest.raises(TypeError):
        QueueConf(**raw, host="x")  # type: ignore[call-arg]


def test_the_reporter_without_a_publisher_only_logs() -> None:
    reporter = get_progress_reporter()
    reporter.increment.remote(3, True)
    reporter.increment_and_write_progress_message.remote(2, "Did", "things")
    reporter.message.remote("hello")
    assert reporter.get_counter.remote() == 5
    reporter.clear_progress()
    assert reporter.get_counter() == 0


def test_the_reporter_connects_lazily_and_swallows_send_errors() -> None:
    publisher = ProgressPublisher(host="127.0.0.1", port=free_port(), queue="q",
                                  message=ProgressMessage(submission_id="s"))  # type: ignore[arg-type]
    reporter = get_progress_reporter(publisher)
    reporter.message.remote("nobody listens")
    reporter.increment.remote(1, True)
    assert reporter.get_counter() == 1


def test_the_reporter_throttles_as_bystros_did(server: Beanstalkd, prefix: str,
                                               tubes: Tubes) -> None:
    host, port = server.address.rsplit(":", 1)
    publisher = ProgressPublisher(host=host, port=int(port), queue=f"{prefix}ev",
                                  message=ProgressMessage(submission_id=4))  # type: ignore[arg-type]
    reporter: Any = get_progress_reporter(publisher, 10)
    reporter.increment.remote(9)  # below the interval: held back
    reporter.increment.remote(1)  # 10: sent
    reporter.increment.remote(1, True)  # forced: sent
    reporter.increment_and_write_progress_message.remote(4, "Fetched", "variants")
    reporter.increment_and_write_progress_message.remote(10, "Fetched", "variants")
    reporter.message("plain")
    reporter.clear_progress.remote()
    reporter.increment(3)
    publisher.flush()  # bystroq's addition: the count held back goes out at the end
    events = tubes.events(f"{prefix}ev")
    assert [e["data"] for e in events] == [
        {"progress": 10, "skipped": 0}, {"progress": 11, "skipped": 0},
        "Fetched 25 variants", "plain", {"progress": 3, "skipped": 0}]
    assert all(e["submissionId"] == 4 and e["event"] == "progress" for e in events)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]


def _config_file(tmp_path: Path, server: Beanstalkd, prefix: str, isolation: str) -> Path:
    path = tmp_path / "beanstalk.yml"
    inline = "      isolation: inline\n" if isolation == "inline" else ""
    path.write_text(
        f"beanstalkd:\n  addresses:\n    - {server.address}\n  tubes:\n    count:\n"
        f"      submission: {prefix}count\n      events: {prefix}count_events\n{inline}"
    )
    return path


def _run_listener(config_path: Path) -> tuple[int, int, str]:
    """Run the Bystro-style listener in burst mode: (its pid, exit code, stderr)."""
    with subprocess.Popen(
        [sys.executable, str(LISTENER), "--queue_conf", str(config_path), "--out_name", "n"],
        env={**os.environ, "BYSTROQ_BYSTRO_BURST": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.pid, proc.returncode, stderr.decode()


def _by_job(events: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for event in events:
        out.setdefault(event.get("submissionId", ("queueId", event.get("queueId"))),
                       []).append(event)
    return out


@pytest.mark.parametrize("isolation", ["fork", "inline"])
def test_a_bystro_style_listener_runs_unchanged(
    isolation: str, server: Beanstalkd, prefix: str, tubes: Tubes, tmp_path: Path,
    store: Store,
) -> None:
    lines = tmp_path / "in.txt"
    lines.write_text("a\nb\nc\n")
    job = {"inputPath": str(lines), "outDir": str(tmp_path)}
    with tubes.client(use=f"{prefix}count") as client:
        ids = {
            "a": client.put(msgspec.json.encode({"submissionId": "a", **job})),
            7: client.put(msgspec.json.encode({"submissionID": 7, **job})),  # older spelling
            "f": client.put(msgspec.json.encode({"submissionId": "f", **job, "fail": True})),
            "garbage": client.put(b"not json"),
            "short": client.put(b'{"submissionId": "m"}'),
        }
    config_path = _config_file(tmp_path, server, prefix, isolation)
    pid, code, stderr = _run_listener(config_path)
    assert code == 0, stderr[-3000:]
    events = tubes.events(f"{prefix}count_events")
    assert all("submissionID" not in e and "queueID" not in e for e in events)
    jobs = _by_job(events)

    for sid in ("a", 7):
        got = jobs[sid]
        assert [(e["event"], e.get("data")) for e in got] == [
            ("started", None), ("progress", "Counting lines"),
            ("progress", {"progress": 2, "skipped": 0}), ("progress", "Counted 3 lines"),
            ("completed", None)]
        assert [e["seq"] for e in got] == [0, 1, 2, 3, 4]
        assert {(e["queueId"], e["attempt"]) for e in got} == {(ids[sid], 1)}
        results = got[-1]["results"]
        assert (results["lineCount"], results["resultPath"]) == (3, str(tmp_path / "n"))
        assert (results["handlerPid"] != pid) == (isolation == "fork")

    failed = jobs["f"][-1]
    assert (failed["event"], failed["reason"]) == ("failed", "asked to fail after 3 lines")
    assert [e["event"] for e in jobs["f"]][:1] == ["started"]
    garbage, short = jobs[("queueId", ids["garbage"])], jobs[("queueId", ids["short"])]
    assert [(e["event"], e["queueId"]) for e in garbage + short] == [
        ("failed", ids["garbage"]), ("failed", ids["short"])]
    assert "not valid JSON" in garbage[0]["reason"]
    assert "inputPath" in short[0]["reason"]
    assert tubes.counts(f"{prefix}count") == {"ready": 0, "reserved": 0, "delayed": 0,
                                              "buried": 3}

    # The consumer turns the camelCase events into the same records as the older ones.
    with tubes.client(use=f"{prefix}count_events") as client:
        for event in events:
            client.put(msgspec.json.encode(event))
    with Consumer(parse(config_path.read_text()), store) as consumer:
        assert consumer.run(burst=True).applied == len(events)
    done, older, fail = store.get("a"), store.get(record_key(7)), store.get("f")
    assert done is not None and older is not None and fail is not None
    assert (done.state, done.queue_id, done.progress, done.attempts) == (
        "completed", ids["a"], 2, 1)
    assert done.result is not None and done.result["results"]["lineCount"] == 3
    assert "Counted 3 lines" in done.messages
    assert (older.submission_id, older.state) == ("7", "completed")
    assert (fail.state, fail.reason) == ("failed", "asked to fail after 3 lines")
    invalid = store.get(orphan_id(server.address, ids["garbage"]))
    assert invalid is not None and invalid.state == "failed"


def test_bystroqs_own_queue_conf_leaves_the_callers_dict_alone() -> None:
    from bystroq import QueueConf as BystroqQueueConf

    raw = {"addresses": ["127.0.0.1:11300"],
           "tubes": {"count": {"submission": "count", "events": "count_events"}}}
    conf = BystroqQueueConf(**raw)  # type: ignore[arg-type]
    assert conf.tubes["count"].events == "count_events"
    assert raw["tubes"] == {"count": {"submission": "count", "events": "count_events"}}


def test_sigterm_drains_and_a_dead_handler_fails_its_job(
    server: Beanstalkd, prefix: str, tubes: Tubes, tmp_path: Path,
) -> None:
    lines, go = tmp_path / "in.txt", tmp_path / "go"
    lines.write_text("a\n")
    job = {"inputPath": str(lines), "outDir": str(tmp_path)}
    with tubes.client(use=f"{prefix}count") as client:
        dies = client.put(msgspec.json.encode({"submissionId": "dies", **job, "exitCode": 3}))
        waits = client.put(msgspec.json.encode({"submissionId": "waits", **job,
                                                "waitFor": str(go)}))
    config_path = _config_file(tmp_path, server, prefix, "fork")
    seen: list[dict[str, Any]] = []

    def running() -> bool:
        seen.extend(tubes.events(f"{prefix}count_events"))
        return any(e.get("submissionId") == "waits" and e["event"] == "progress" for e in seen)

    with subprocess.Popen(
        [sys.executable, str(LISTENER), "--queue_conf", str(config_path), "--out_name", "n"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as proc:
        try:
            wait_until(running, timeout_s=30)
            proc.send_signal(signal.SIGTERM)  # stop reserving; the running job may finish
            go.touch()
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    seen.extend(tubes.events(f"{prefix}count_events"))
    jobs = _by_job(seen)
    assert [e["event"] for e in jobs["dies"]] == ["started", "progress", "failed"]
    assert jobs["dies"][-1]["reason"] == "handler process exited with exit code 3"
    assert jobs["dies"][-1]["queueId"] == dies
    assert [e["event"] for e in jobs["waits"]][-1] == "completed"
    assert jobs["waits"][-1]["queueId"] == waits
    assert tubes.counts(f"{prefix}count") == {"ready": 0, "reserved": 0, "delayed": 0,
                                              "buried": 1}


def test_a_forked_handler_past_its_timeout_is_killed_and_fails(
    server: Beanstalkd, prefix: str, tubes: Tubes,
) -> None:
    class Job(BaseMessage, frozen=True):
        block: bool

    class Done(CompletedJobMessage, frozen=True, kw_only=True):
        saw: int

    seen_in_parent: list[int] = []  # a closure over local state: the child needs no pickling of it

    def handler_fn(publisher: ProgressPublisher, job: Job) -> int:
        if job.block:
            threading.Event().wait()  # until the worker kills the child
        return len(seen_in_parent)

    def completed_msg_fn(job: Job, result: int) -> Done:
        return Done(job.submission_id, saw=result)

    seen_in_parent.append(1)
    raw: dict[str, Any] = {
        "addresses": [server.address],
        "tubes": {"t": {"submission": f"{prefix}t", "events": f"{prefix}t_events",
                        "timeout": 0.5}}}
    listener = Listener(Job, handler_fn, lambda job: SubmittedJobMessage(job.submission_id),  # type: ignore[arg-type]
                        completed_msg_fn)
    with tubes.client(use=f"{prefix}t") as client:
        client.put(b'{"submissionId": "quick", "block": false}')
        blocked = client.put(b'{"submissionId": "stuck", "block": true}')
    options = WorkerOptions(runner_factory=bystro.ForkRunner)
    with Worker(bystro.loaded_config(QueueConf(**raw)), "t", listener, options) as worker:
        assert worker.step().value == "completed"
        assert worker.step().value == "failed"
    events = tubes.events(f"{prefix}t_events")
    assert [(e["event"], e["submissionId"]) for e in events] == [
        ("started", "quick"), ("completed", "quick"), ("started", "stuck"), ("failed", "stuck")]
    assert events[1]["saw"] == 1
    assert "timeout" in events[3]["reason"] and events[3]["queueId"] == blocked


def test_listen_takes_bystros_parameters_in_bystros_order() -> None:
    import inspect

    params = inspect.signature(bystro.listen).parameters
    assert list(params) == ["job_data_type", "handler_fn", "submit_msg_fn",
                            "completed_msg_fn", "queue_conf", "tube", "failed_msg_fn"]
    assert params["failed_msg_fn"].default is bystro.default_failed_msg_fn
    assert bystro.default_failed_msg_fn(None, 3, ValueError("bad")) == InvalidJobMessage(3, "bad")
    assert bystro.default_failed_msg_fn(SubmittedJobMessage("s"), 3, ValueError()) == (
        FailedJobMessage("s", "ValueError"))


def test_a_bad_queue_conf_is_a_config_error_naming_the_category() -> None:
    from bystroq.errors import ConfigError

    with pytest.raises(ConfigError, match=r"queue_conf.tubes.count: .*unknown field `tt`"):
        bystro.loaded_config(QueueConf(["127.0.0.1:11300"],
                                       {"count": {"submission": "c", "events": "e", "tt": 1}}))
    with pytest.raises(ConfigError, match="queue_conf: address 'nowhere'"):
        bystro.loaded_config(QueueConf(["nowhere"], {}))
