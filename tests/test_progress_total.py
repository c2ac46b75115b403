"""Progress is seen while a handler runs (throttled by time), with a total when known."""

from __future__ import annotations

import msgspec

from bystroq.messages import ProgressMessage
from bystroq.progress import ProgressPublisher, get_progress_reporter
from bystroq.records import Store, parse_event


def _publisher(sent: list[dict[str, object]]) -> ProgressPublisher:
    def send(tube: str, body: bytes) -> None:
        sent.append(msgspec.json.decode(body))

    return ProgressPublisher(host="127.0.0.1", port=1, queue="events",
                             message=ProgressMessage(submissionID="p1"), sender=send)


def test_the_first_step_of_a_handler_is_published_at_once_then_once_a_second() -> None:
    sent: list[dict[str, object]] = []
    publisher = _publisher(sent)
    reporter = get_progress_reporter(publisher, total=100)
    for _ in range(100):
        reporter.increment(1)
    assert [event["data"] for event in sent] == [{"progress": 1, "skipped": 0, "total": 100}]
    publisher.flush()
    assert sent[-1]["data"] == {"progress": 100, "skipped": 0, "total": 100}


def test_without_a_total_the_data_keeps_bystros_shape() -> None:
    sent: list[dict[str, object]] = []
    reporter = get_progress_reporter(_publisher(sent))
    reporter.increment(3)
    assert sent[0]["data"] == {"progress": 3, "skipped": 0}


def test_the_record_keeps_the_total(store: Store) -> None:
    body = {"event": "progress", "submissionID": "t1", "queueID": 4, "attempt": 1, "seq": 1,
            "data": {"progress": 25, "skipped": 0, "total": 200}}
    store.apply_events([parse_event(msgspec.json.encode(body), "echo", "127.0.0.1:1")])
    record = store.get("t1")
    assert record is not None and (record.progress, record.total) == (25, 200)


def test_the_view_gives_percent_and_eta_from_the_total() -> None:
    from bystroq.records.model import Record
    from bystroq.records.views import submission_view

    record = Record(submission_id="v1", category="echo", state="started", progress=25,
                    total=100, started_at=1000.0)
    view = submission_view(record, now=1010.0)  # 25 of 100 in 10 s: 30 s to go
    assert (view.total, view.percent, view.eta_s) == (100, 25.0, 30.0)
    finished = submission_view(Record(submission_id="v2", category="echo", state="completed",
                                      progress=100, total=100, started_at=1000.0), now=1010.0)
    assert (finished.percent, finished.eta_s) == (100.0, None)
    assert submission_view(Record(submission_id="v3", category="echo")).percent is None
