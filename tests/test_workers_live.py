"""Live workers: heartbeats on a real server, read by a real consumer into both stores;
`bystroq workers` and `/v1/workers`; quiet and stop through the control tube."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi import FastAPI

from bystroq import Producer, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.control import Heartbeat, HeldJob, QuietRequest, decode_request, heartbeat_tube
from bystroq.messages import encode
from bystroq.ops.workers import list_workers
from bystroq.records import Store
from bystroq.records.views import worker_view
from bystroq.records.workers import WorkerRow
from bystroq.servers import servers_of
from bystroq.testing import Beanstalkd, config_text, wait_until
from bystroq.web import WebSettings, create_app, create_router
from bystroq.web.embedded import IdleWorker
from bystroq.worker.heartbeat import BEAT_PRIORITY, HeartbeatSender
from tests.conftest import Invoke, Tubes
from tests.web_server import client, serving

INTERVAL_S = 0.2
EMPTY = {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def beat(worker: str = "w.1", at: float | None = None, **fields: Any) -> Heartbeat:
    values: dict[str, Any] = dict(
        worker=worker, host="h", pid=1, category="echo", state="running", slotsBusy=0,
        slotsTotal=1, isolation="inline", version="0", startedAt=0.0,
        at=time.time() if at is None else at, intervalS=INTERVAL_S)
    values.update(fields)
    return Heartbeat(**values)


@contextmanager
def consuming(config: LoadedConfig, store: Store) -> Iterator[Consumer]:
    """An events consumer running in a thread until the block ends."""
    consumer = Consumer(config, store)
    thread = threading.Thread(target=consumer.run, name="test-consumer", daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(timeout=20)
        consumer.close()
        assert not thread.is_alive()


@contextmanager
def listening(config_file: Path, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`bystroq listen --tube echo` in a subprocess, killed at the end if still running."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bystroq", "--config", str(config_file), "listen",
             "--tube", "echo", "--heartbeat-interval", str(INTERVAL_S), *args],
            stdout=subprocess.DEVNULL, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)


@pytest.fixture
def config_file(server: Beanstalkd, prefix: str, tmp_path: Path, records_url: str) -> Path:
    path = tmp_path / "workers.yml"
    path.write_text(config_text([server.address], prefix=prefix, records=records_url))
    return path


def listed(records_cli: Invoke, *args: str) -> list[dict[str, Any]]:
    code, out, err = records_cli("workers", "--json", *args)
    assert code == 0, err
    workers: list[dict[str, Any]] = json.loads(out)
    return workers


def by_pid(records_cli: Invoke, pid: int, *args: str) -> dict[str, Any] | None:
    return next((w for w in listed(records_cli, *args) if w["pid"] == pid), None)


# -- pure rules ----------------------------------------------------------------------------


def test_silent_for_three_intervals_is_gone() -> None:
    row = WorkerRow(worker_id="w.1", host="h", pid=1, category="echo", state="running",
                    slots_busy=1, slots_total=2, isolation="inline", version="0",
                    started_at=0.0, last_seen_at=100.0, interval_s=5.0,
                    jobs=[HeldJob(submissionID="s", queueID=7, server="127.0.0.1:1")])
    assert worker_view(row, now=114.9).state == "running"
    assert worker_view(row, now=114.9).alive
    gone = worker_view(row, now=115.1)
    assert (gone.state, gone.alive, gone.last_seen_at) == ("gone", False, 100.0)
    assert gone.jobs[0].submission_id == "s"  # what it held when last heard of
    stopped = worker_view(msgspec.structs.replace(row, state="stopped"), now=101)
    assert (stopped.state, stopped.alive) == ("stopped", False)


def test_control_messages_are_told_apart() -> None:
    assert decode_request(b'{"control": "quiet"}') == QuietRequest()
    cancel = decode_request(b'{"queueID": 5, "submissionID": "a"}')
    assert getattr(cancel, "queueID", None) == 5
    with pytest.raises(Exception, match="control"):
        decode_request(b'{"control": "explode"}')


# -- the tube stays small without a consumer -----------------------------------------------


def test_without_a_consumer_the_tube_holds_one_beat_per_living_worker(
    config: LoadedConfig, tubes: Tubes,
) -> None:
    tube = heartbeat_tube(config.category("echo").submission)
    with tubes.client(use=tube) as beanstalk:  # what a worker that died long ago left
        beanstalk.put(encode(beat("dead.1", at=time.time() - 3600)), priority=BEAT_PRIORITY)
        beanstalk.put(encode(beat("recent.1", at=time.time())), priority=BEAT_PRIORITY)
    sender = HeartbeatSender(servers_of(config.addresses), tube, 60, lambda: beat("me.1"))
    try:
        for _ in range(5):
            sender.send(beat("me.1"))
        # The dead worker's beat was deleted; the recent one is not ours to judge yet.
        assert tubes.counts(tube)["ready"] == 2
    finally:
        sender.close(last=beat("me.1", state="stopped"))
    with tubes.client(watch=tube) as beanstalk:
        left = []
        for _ in range(2):
            job = beanstalk.reserve(0)
            left.append(json.loads(job.body))
            beanstalk.delete(job)
    assert sorted((b["worker"], b["state"]) for b in left) == [
        ("me.1", "stopped"), ("recent.1", "running")]


def test_the_newest_beat_wins_in_the_store(store: Store) -> None:
    now = time.time()
    store.save_beats([beat("w.1", at=now, slotsBusy=1), beat("w.1", at=now - 1)])
    store.save_beats([beat("w.1", at=now - 2, state="stopped")])  # late, from another server
    (row,) = store.workers()
    assert (row.state, row.slots_busy, row.last_seen_at) == ("running", 1, now)
    store.save_beats([beat("old.1", at=now - 2 * 86400)], now=now)  # forgotten after a day
    assert [r.worker_id for r in store.workers()] == ["w.1"]
    assert store.worker("old.1") is None


def test_the_consumer_reads_every_waiting_beat_into_the_store(
    config: LoadedConfig, store: Store, tubes: Tubes,
) -> None:
    tube = heartbeat_tube(config.category("echo").submission)
    now = time.time()
    with tubes.client(use=tube) as beanstalk:
        for n in range(120):  # more than one batch
            beanstalk.put(encode(beat(f"w.{n}", at=now, slotsBusy=n % 2)))
        beanstalk.put(b"not a heartbeat")
    with Consumer(config, store) as consumer:
        assert consumer.beats.step(force=True) == 120
        assert consumer.beats.step() == 0  # within POLL_S: not looked at again
    assert len(store.workers()) == 120 and len(store.workers("echo")) == 120
    assert tubes.counts(tube) == EMPTY  # the malformed one was deleted too
    seven = store.worker("w.7")
    assert seven is not None and seven.slots_busy == 1


# -- a real `bystroq listen` -----------------------------------------------------------------


def test_a_cli_worker_is_listed_and_shown_gone_once_killed(
    config: LoadedConfig, store: Store, records_cli: Invoke, config_file: Path, tmp_path: Path,
    tubes: Tubes,
) -> None:
    with consuming(config, store), listening(config_file, tmp_path / "w.log",
                                             "--concurrency", "2") as proc:
        wait_until(lambda: by_pid(records_cli, proc.pid) is not None, timeout_s=30)
        seen = by_pid(records_cli, proc.pid)
        assert seen is not None
        assert seen["workerID"].endswith(f".{proc.pid}")
        assert (seen["host"], seen["category"], seen["state"], seen["alive"]) == (
            socket.gethostname(), "echo", "running", True)
        assert (seen["slotsBusy"], seen["slotsTotal"], seen["isolation"]) == (0, 2, "inline")
        assert (seen["version"], seen["intervalS"], seen["jobs"]) == (
            metadata.version("bystroq"), INTERVAL_S, [])
        assert seen["startedAt"] <= seen["lastSeenAt"] <= time.time() + 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = time.time()
        beats = heartbeat_tube(config.category("echo").submission)
        wait_until(lambda: tubes.counts(beats) == EMPTY)  # the consumer read its last beat
        wait_until(lambda: by_pid(records_cli, proc.pid) is None, timeout_s=10)
        gone = by_pid(records_cli, proc.pid, "--all")
        assert gone is not None and (gone["state"], gone["alive"]) == ("gone", False)
        assert gone["lastSeenAt"] <= killed_at < gone["lastSeenAt"] + 3 * INTERVAL_S + 5
        code, out, _ = records_cli("workers", "--all")
        assert code == 0 and seen["workerID"] in out and "gone" in out


def test_quiet_stops_reserving_and_stop_ends_the_process(
    config: LoadedConfig, store: Store, records_cli: Invoke, config_file: Path,
    tmp_path: Path, tubes: Tubes, server: Beanstalkd,
) -> None:
    submission = config.category("echo").submission
    with (consuming(config, store), Producer(config, recorder=store) as producer,
          listening(config_file, tmp_path / "w.log") as proc):
        wait_until(lambda: by_pid(records_cli, proc.pid) is not None, timeout_s=30)
        worker_id = by_pid(records_cli, proc.pid)["workerID"]  # type: ignore[index]
        long = producer.submit("echo", {"submissionID": "long", "sleep_s": 2})
        wait_until(lambda: (by_pid(records_cli, proc.pid) or {}).get("jobs") == [
            {"submissionID": "long", "queueID": long.job_id, "server": server.address}])
        code, _, err = records_cli("workers", "quiet", worker_id)
        assert code == 0, err
        wait_until(lambda: (by_pid(records_cli, proc.pid) or {}).get("state") == "quiet")
        producer.submit("echo", {"submissionID": "after"})
        # What it ran finishes; what came after stays ready while the worker lives on.
        wait_until(lambda: getattr(store.get("long"), "state", None) == "completed")
        last = by_pid(records_cli, proc.pid)
        assert last is not None
        wait_until(lambda: (by_pid(records_cli, proc.pid) or {}).get(
            "lastSeenAt", 0) > last["lastSeenAt"] + 3 * INTERVAL_S)
        assert proc.poll() is None and tubes.counts(submission)["ready"] == 1
        quiet = by_pid(records_cli, proc.pid)
        assert quiet is not None
        assert (quiet["state"], quiet["slotsBusy"], quiet["jobs"]) == ("quiet", 0, [])
        code, _, err = records_cli("workers", "stop", worker_id)
        assert code == 0, err
        assert proc.wait(timeout=30) == 0
        wait_until(lambda: (by_pid(records_cli, proc.pid, "--all") or {}).get(
            "state") == "stopped")
        assert by_pid(records_cli, proc.pid) is None
        assert tubes.counts(submission)["ready"] == 1
        code, _, err = records_cli("workers", "quiet", worker_id)
        assert code == 2 and "is stopped" in err and "nothing to quiet" in err


# -- the HTTP API ----------------------------------------------------------------------------


def test_the_api_lists_quiets_and_stops_a_worker(
    config: LoadedConfig, store: Store, records_url: str, prefix: str,
) -> None:
    worker_id = f"{prefix}api.1"
    worker = Worker(config, "echo", options=WorkerOptions(
        heartbeat_interval_s=INTERVAL_S, worker_id=worker_id))
    thread = threading.Thread(target=worker.run, name="api-worker", daemon=True)
    app = create_app(config, WebSettings(records_url=records_url))
    with consuming(config, store), serving(app) as url, client(url) as http:
        thread.start()
        try:
            wait_until(lambda: [w["workerID"] for w in http.get("/v1/workers").json()] == [
                worker_id], timeout_s=20)
            one = http.get(f"/v1/workers/{worker_id}").json()
            assert (one["category"], one["state"], one["alive"]) == ("echo", "running", True)
            assert http.get("/v1/workers/nobody.1").status_code == 404
            assert http.get("/v1/workers/bad id").status_code == 404
            assert http.post("/v1/workers/nobody.1/quiet").status_code == 404
            assert http.get("/v1/workers", params={"category": "nope"}).status_code == 404
            answer = http.post(f"/v1/workers/{worker_id}/quiet")
            assert answer.status_code == 202 and answer.json()["workerID"] == worker_id
            wait_until(lambda: http.get(f"/v1/workers/{worker_id}").json()["state"] == "quiet")
            assert worker.state == "quiet"
            assert http.post(f"/v1/workers/{worker_id}/stop").status_code == 202
            thread.join(timeout=20)
            assert not thread.is_alive()
        finally:
            worker.stop(0)
            thread.join(timeout=20)
        wait_until(lambda: http.get(f"/v1/workers/{worker_id}").json()["state"] == "stopped",
                   timeout_s=30)
        assert http.get("/v1/workers").json() == []
        every = http.get("/v1/workers", params={"all": "true", "category": "echo"}).json()
        assert [(w["workerID"], w["alive"]) for w in every] == [(worker_id, False)]
        refused = http.post(f"/v1/workers/{worker_id}/stop")
        assert refused.status_code == 409 and "is stopped" in refused.json()["detail"]


def test_the_idle_worker_of_a_web_app_beats_too(
    config: LoadedConfig, store: Store, records_url: str, tmp_path: Path,
) -> None:
    idle = IdleWorker(config, ["echo"], idle_after_s=0.1, lock_path=tmp_path / "idle.lock")
    app = FastAPI()
    app.include_router(create_router(config, WebSettings(records_url=records_url)))
    idle.install(app)

    def idle_workers() -> list[Any]:  # read from the store: a request would pause it
        return [w for w in list_workers(store) if w.worker_id.endswith(".idle-echo")]

    with consuming(config, store):
        with serving(app):
            wait_until(lambda: [(w.category, w.state) for w in idle_workers()] == [
                ("echo", "running")], timeout_s=20)
        wait_until(lambda: idle_workers() == [], timeout_s=10)  # `stopped` on shutdown
