"""Chaos: real servers and workers killed mid-run (pytest -m chaos). Nothing may be lost."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bystroq import Outcome, Producer, Worker
from bystroq.chaos import killed_server, killed_workers, poison_job, server_away
from bystroq.config import LoadedConfig
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
    assert report.notes == ["submit errors=0"]
    assert report.lost == 0 and report.completed == 600


def test_poison_job_is_buried_and_the_rest_complete() -> None:
    report = poison_job(others=100, max_attempts=3)
    assert report.lost == 0 and report.completed == 100
    assert report.buried == 1


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


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: __import__("json").dumps(v).encode()),
    near_valid.map(lambda v: __import__("json").dumps(v).encode()),
))
def test_fuzzed_bodies_fail_cleanly(config: LoadedConfig, tubes: Tubes, body: bytes) -> None:
    """Whatever the body, the job ends failed and buried, and the worker goes on."""
    with Producer(config) as producer:
        producer.submit("annotation", body)
    with Worker(config, "annotation") as worker:
        outcome = worker.step()
    # A body that happens to be a valid job fails on its missing input file.
    assert outcome in (Outcome.INVALID, Outcome.FAILED)
    events = tubes.events(config.category("annotation").events)
    assert [e["event"] for e in events][-1] == "failed"
    submission = config.category("annotation").submission
    assert tubes.counts(submission)["buried"] >= 1
    assert tubes.counts(submission)["ready"] == 0
