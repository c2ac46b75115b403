"""Chaos for the records (pytest -m chaos): no record lost or wrong, no consumer stopped."""

from __future__ import annotations

import pytest

from tests.chaos.records import poison_events, sqlite_disk_full, two_consumers_postgres

pytestmark = [pytest.mark.chaos]


@pytest.mark.postgres
def test_two_consumers_and_recording_producers_on_postgres() -> None:
    report = two_consumers_postgres(jobs=2000)
    assert report.ok and report.completed == 2000, report


def test_sqlite_store_on_a_full_file_system() -> None:
    report = sqlite_disk_full(jobs=400)
    if report.submitted == 0:
        pytest.skip(report.notes[0])
    assert report.ok and report.completed == 400, report
    assert "events waiting while full=0" not in report.notes[-1]


@pytest.mark.postgres
def test_poison_events_on_both_backends() -> None:
    report = poison_events(jobs=300)
    assert report.ok and report.completed == 600, report
    assert report.buried == 9
