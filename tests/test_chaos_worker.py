"""Chaos for the worker's guarantees (pytest -m chaos): paused workers, a silent network,
bodies and results the worker must refuse. Nothing lost, nothing reported by a non-holder."""

from __future__ import annotations

import pytest

from tests.chaos.worker import (
    non_holder_reports,
    partitioned_worker,
    paused_worker,
    refused_bodies,
)


def test_non_holder_reports_counts_an_earlier_attempt_stored_after_a_later_one() -> None:
    def event(kind: str, queue_id: int, attempt: int) -> dict[str, object]:
        return {"event": kind, "queueID": queue_id, "attempt": attempt}

    honest = [(1, event("started", 7, 1)), (2, event("started", 7, 2)),
              (3, event("completed", 7, 2)), (4, event("started", 8, 1))]
    assert non_holder_reports(honest) == 0
    stale = [*honest, (5, event("completed", 7, 1)), (6, event("started", 8, 1))]
    assert non_holder_reports(stale) == 1
    # Store order is the id order, whatever order the events were read in.
    assert non_holder_reports(list(reversed(honest))) == 0


@pytest.mark.chaos
def test_sigstopped_worker_never_reports_a_job_it_lost() -> None:
    report = paused_worker()
    assert report.lost == 0 and report.completed == report.submitted
    assert report.two_holders == 0
    assert report.notes[0].startswith("pauses=") and report.notes[0].endswith("alive=True")


@pytest.mark.chaos
def test_silent_network_to_a_worker_loses_nothing_and_reports_nothing_twice() -> None:
    report = partitioned_worker()
    assert report.lost == 0 and report.completed == report.submitted
    assert report.two_holders == 0


@pytest.mark.chaos
def test_poison_body_and_oversized_result_are_failed_and_buried() -> None:
    report = refused_bodies()
    assert report.lost == 0 and report.buried == 2
    assert report.notes == ["deep reason ok=True, big reason ok=True, worker alive=True"]
