"""Chaos: real servers and workers killed mid-run (pytest -m chaos). Nothing may be lost."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import greenstalk
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bystroq import Producer
from bystroq.testing import wait_until
from tests.chaos.core import (
    Run,
    chaos_run,
    drained_on_sigterm,
    fuzzed_bodies,
    killed_server,
    killed_workers,
    poison_job,
    released_on_short_drain,
    server_away,
    server_restarted,
)
from tests.conftest import Tubes

pytestmark = pytest.mark.chaos


def test_sigkill_a_worker_three_times() -> None:
    report = killed_workers(jobs=300, kills=3)
    assert report.lost == 0 and report.completed == 300
    assert report.ran_twice <= 3  # only the jobs in flight at a kill


def test_sigkill_the_server_with_binlog() -> None:
    report = killed_server(jobs=2000)
    assert report.lost == 0 and report.completed == 2000


def test_one_of_three_servers_goes_away() -> None:
    report = server_away(jobs=600)
    assert report.notes[0] == "submit errors=0"
    # A put cut off by the kill is reported as unknown, never put again: at most one.
    assert report.submitted >= 599
    assert report.lost == 0 and report.completed == report.submitted


def test_poison_job_is_buried_and_the_rest_complete() -> None:
    report = poison_job(others=100, max_attempts=3)
    assert report.lost == 0 and report.completed == 100
    assert report.buried == 1


def test_sigterm_drains_running_jobs() -> None:
    report = drained_on_sigterm(jobs=8)
    assert report.lost == 0 and report.completed == 8
    assert report.notes == ["exit code=0, reserved after=0"]
    assert report.ran_twice == 0


def test_short_drain_releases_jobs_to_another_worker() -> None:
    report = released_on_short_drain(jobs=8)
    assert report.lost == 0 and report.completed == 8
    assert report.notes == ["first worker exit code=0"]
    assert report.ran_twice == 8  # each was started, released, and run again


def test_worker_reconnects_after_the_server_restarts() -> None:
    report = server_restarted(jobs=200)
    assert report.lost == 0 and report.completed == 200
    assert report.notes == ["same worker alive=True"]


def test_fuzzed_bodies_scenario() -> None:
    report = fuzzed_bodies(count=150)
    assert report.lost == 0 and report.buried == 150
    assert report.notes == ["failed events=150, worker alive=True"]


VALID = {"submissionID": 1, "inputFilePath": "/nonexistent", "outputBasePath": "/tmp/x"}

near_valid = st.fixed_dictionaries({}).flatmap(lambda _: st.one_of(
    st.builds(lambda k, v: {**VALID, k: v}, st.sampled_from(sorted(VALID)),
              st.one_of(st.none(), st.lists(st.integers()), st.floats(), st.booleans())),
    st.builds(lambda k: {x: y for x, y in VALID.items() if x != k}, st.sampled_from(sorted(VALID))),
    st.builds(lambda k: {**VALID, k: 1}, st.text(min_size=1).filter(lambda k: k not in VALID)),
))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=10,
)


@pytest.fixture(scope="module")
def fuzz_run() -> Iterator[tuple[Run, subprocess.Popen[bytes]]]:
    """One real `bystroq listen` process for every example: it must never die."""
    with chaos_run(1) as run:
        yield run, run.worker(category="annotation")


# No shrinking: each try of a failing example waits out a time-out, and pytest-timeout's
# exception would count as one more failure to shrink. A failure is reported as found.
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(body=st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(v).encode()),
))
def test_fuzzed_bodies_fail_cleanly(
    fuzz_run: tuple[Run, subprocess.Popen[bytes]], body: bytes
) -> None:
    """Whatever the body, the job ends as a failed event and a buried job."""
    run, worker = fuzz_run
    with Producer(run.config) as producer:
        handle = producer.submit("annotation", body)
    address = (run.servers[0].host, run.servers[0].port)
    with greenstalk.Client(address, encoding=None) as client:
        wait_until(lambda: client.stats_job(handle.job_id)["state"] == "buried")
    # A body that happens to be a valid job fails on its missing input file.
    failed = [e for e in events_of(run, "annotation") if e["event"] == "failed"]
    assert [e["queueID"] for e in failed] == [handle.job_id]
    assert worker.poll() is None



def events_of(run: Run, category: str) -> list[dict[str, Any]]:
    """Every ready event of the category, consumed."""
    return Tubes(run.servers[0].address).events(run.config.category(category).events)
