"""A worker's Prometheus metrics after a known sequence of jobs (completed, retried,
failed, invalid), read back through the HTTP endpoint with prometheus_client's parser: in
process, and through `bystroq listen --metrics-port` (inline, and process isolation with two
slots, where the parent counts every job once)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from bystroq import __version__
from bystroq.config import LoadedConfig
from bystroq.examples.echo import EchoJob
from bystroq.metrics.http import serving
from bystroq.metrics.worker import WorkerCollector
from bystroq.producer import Producer
from bystroq.testing import Beanstalkd, config_for, config_text, free_port, wait_until
from bystroq.worker import Worker, WorkerOptions
from tests.conftest import Tubes
from tests.scrape import Scrape, scrape

# A RuntimeError is retried once, then fails; anything else fails at once.
RETRY = "max_attempts: 2\nretry: {base_s: 0, max_s: 0, jitter: false, on: [RuntimeError]}"
JOBS = "bystroq_worker_jobs_total"


@pytest.fixture
def retry_config(server: Beanstalkd, prefix: str) -> LoadedConfig:
    return config_for([server.address], prefix=prefix, extra=RETRY)


def put_sequence(config: LoadedConfig, tubes: Tubes) -> None:
    """Two jobs that complete, one retried then failed, one failed at once, one invalid."""
    with Producer(config, recorder=None) as producer:
        producer.submit("echo", EchoJob(submissionID="ok-1"))
        producer.submit("echo", EchoJob(submissionID="ok-2"))
        producer.submit("echo", EchoJob(submissionID="boom", fail="boom"))
        producer.submit("echo", EchoJob(submissionID="bad-done", fail_completed=True))
    with tubes.client(use=config.category("echo").submission) as client:
        client.put(b'{"submissionID": "invalid", "sleep_s": "soon"}')


def finished(s: Scrape) -> float:
    return s.total(JOBS, category="echo")


def check_sequence(s: Scrape, slots: int, since: float) -> None:
    """The metrics of `put_sequence` run by a worker of `slots` slots, put at `since`."""
    outcomes = {sample.labels["outcome"]: sample.value for sample in s.samples
                if sample.name == JOBS}
    assert outcomes == {"completed": 2, "retried": 1, "failed": 2, "invalid": 1,
                        "gave_up": 0, "cancelled": 0, "released": 0, "lease_lost": 0}
    assert s.value("bystroq_worker_retries_total", category="echo") == 1
    assert s.value("bystroq_worker_buried_total", category="echo") == 3
    assert s.value("bystroq_worker_leases_lost_total", category="echo") == 0
    # Handlers ran for the two completed, the retried attempt and both failures.
    assert s.value("bystroq_worker_job_duration_seconds_count", category="echo") == 5
    assert s.value("bystroq_worker_job_duration_seconds_bucket", category="echo",
                   le="+Inf") == 5
    # Every reserve: five jobs and the retried one's second attempt, each having waited
    # (in the server's whole seconds) no longer than the test ran.
    assert s.value("bystroq_worker_queue_wait_seconds_count", category="echo") == 6
    waited = s.value("bystroq_worker_queue_wait_seconds_sum", category="echo")
    assert 0 <= waited <= 6 * (time.time() - since + 1)
    assert s.value("bystroq_worker_jobs_in_progress", category="echo") == 0
    assert s.value("bystroq_worker_slots", category="echo") == slots
    assert s.value("bystroq_worker_reserve_timeouts_total", category="echo") >= 1
    assert s.value("bystroq_worker_reserve_wait_seconds_total", category="echo") > 0
    assert s.value("bystroq_build_info", version=__version__) == 1


def test_in_process_worker_counts_each_outcome(retry_config: LoadedConfig,
                                               tubes: Tubes) -> None:
    since = time.time()
    put_sequence(retry_config, tubes)
    registry = CollectorRegistry()
    observer = WorkerCollector(registry).observer("echo", 1)
    from bystroq.metrics.build import register_build_info

    register_build_info(registry)
    with Worker(retry_config, "echo", options=WorkerOptions(burst=True,
                                                             observer=observer)) as worker:
        assert worker.run() == 0
    with serving(registry, "127.0.0.1", 0) as port:
        check_sequence(scrape(f"http://127.0.0.1:{port}/metrics"), 1, since)
    assert tubes.counts(retry_config.category("echo").submission)["buried"] == 3


@pytest.fixture
def config_file(tmp_path: Path, server: Beanstalkd, prefix: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(config_text([server.address], prefix=prefix, extra=RETRY))
    return path


@pytest.fixture
def listen(config_file: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Started `bystroq listen` processes, stopped (SIGTERM) when the test ends."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("flags, slots", [
    ([], 1),
    (["--isolation", "process", "--concurrency", "2"], 2),
], ids=["inline", "process-2-slots"])
def test_listen_serves_metrics_of_every_slot(
    config_file: Path, retry_config: LoadedConfig, tubes: Tubes,
    listen: list[subprocess.Popen[str]], flags: list[str], slots: int,
) -> None:
    since = time.time()
    put_sequence(retry_config, tubes)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bystroq", "--config", str(config_file), "listen", "--tube",
         "echo", "--metrics-port", str(port), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listen.append(proc)
    url = f"http://127.0.0.1:{port}/metrics"
    last: list[Scrape] = []

    def all_done() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            last[:] = [scrape(url)]
        except httpx.TransportError:
            return False
        # Done, and idle: a reserve has since timed out.
        return finished(last[0]) == 6 and last[0].value(
            "bystroq_worker_reserve_timeouts_total", category="echo") >= 1

    wait_until(all_done, timeout_s=60)
    check_sequence(last[0], slots, since)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"metrics at http://127.0.0.1:{port}/metrics" in err


def test_a_port_in_use_is_one_clear_line(config_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "bystroq", "--config", str(config_file), "listen",
             "--tube", "echo", "--burst", "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in lines[0]
    assert "--metrics-port" in lines[0]


def test_without_prometheus_client_the_error_says_what_to_install(config_file: Path) -> None:
    hide = ("import sys; sys.modules['prometheus_client'] = None; "
            "from bystroq.cli import main; sys.argv[0] = 'bystroq'; main()")
    done = subprocess.run(
        [sys.executable, "-c", hide, "--config", str(config_file), "listen", "--tube", "echo",
         "--burst", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: --metrics-port needs prometheus_client: "
                     "pip install 'bystroq[metrics]'"]


def test_a_worker_started_again_goes_on_counting(config: LoadedConfig, tubes: Tubes) -> None:
    """Slot threads end with each run (as an idle worker's do); their counts stay."""
    registry = CollectorRegistry()
    collector = WorkerCollector(registry)
    for run, jobs in enumerate((3, 2)):
        with Producer(config, recorder=None) as producer:
            for i in range(jobs):
                producer.submit("echo", EchoJob(submissionID=f"run{run}-{i}"))
        options = WorkerOptions(burst=True, concurrency=2,
                                observer=collector.observer("echo", 2))
        with Worker(config, "echo", options=options) as worker:
            assert worker.run() == 0
    s = Scrape(generate_latest(registry).decode())
    assert s.value(JOBS, category="echo", outcome="completed") == 5
    assert s.value("bystroq_worker_job_duration_seconds_count", category="echo") == 5
    assert s.value("bystroq_worker_jobs_in_progress", category="echo") == 0
    assert s.value("bystroq_worker_reserve_timeouts_total", category="echo") >= 4
