from __future__ import annotations

import threading

import pytest

from bystroq import Outcome, Producer, Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.examples.echo import EchoJob
from bystroq.ops.cancel import CancelResult, cancel_job
from bystroq.testing import wait_until
from tests.conftest import Tubes


def test_cancel_before_start_deletes_the_job(config: LoadedConfig, tubes: Tubes) -> None:
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="c"))
    assert cancel_job(handle.server, handle.job_id, None) is CancelResult.DELETED
    assert cancel_job(handle.server, handle.job_id, None) is CancelResult.NOT_FOUND
    with Worker(config, "echo") as worker:
        assert worker.step() is Outcome.NONE


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_cancel_a_running_job(config: LoadedConfig, tubes: Tubes, isolation: str) -> None:
    with Producer(config) as producer:
        handle = producer.submit("echo", EchoJob(submissionID="run", sleep_s=60))
    options = WorkerOptions(isolation=isolation, max_jobs=1, worker_id=f"w-{isolation}")
    worker = Worker(config, "echo", options=options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        submission = config.category("echo").submission
        wait_until(lambda: tubes.counts(submission)["reserved"] == 1)
        wait_until(lambda: bool(worker.keeper.leases()))
        result = cancel_job(handle.server, handle.job_id, worker.worker_id, "run")
        assert result is CancelResult.REQUESTED
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        worker.stop(0)
        thread.join(timeout=10)
    assert worker.counts[Outcome.CANCELLED] == 1
    events = tubes.events(config.category("echo").events)
    assert [e["event"] for e in events] == ["started", "cancelled"]
    assert events[1]["reason"] == "cancelled by request"
    assert tubes.counts(config.category("echo").submission) == {
        "ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
