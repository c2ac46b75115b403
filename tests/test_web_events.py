"""`GET /v1/events`: server-sent events from the store's event log, in order, resumable
with Last-Event-ID, against a real uvicorn and both stores."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

from bystroq.config import LoadedConfig
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.producer import Producer
from bystroq.records import Store
from bystroq.worker import Worker, WorkerOptions
from tests.web_server import client


def _events(lines: Iterator[str], until: str | None = None,
            count: int | None = None) -> list[dict[str, object]]:
    """Parse SSE frames until an event named `until`, or `count` events, or the end."""
    out: list[dict[str, object]] = []
    frame: dict[str, str] = {}
    for line in lines:
        if line.startswith(":") or line.startswith("retry:"):
            continue
        if line:
            name, _, value = line.partition(": ")
            frame[name] = value
            continue
        if "data" in frame:
            event = {"id": int(frame["id"]), "name": frame["event"],
                     **json.loads(frame["data"])}
            out.append(event)
            if event["name"] == until or len(out) == count:
                return out
        frame = {}
    return out


def _run_job(config: LoadedConfig, store: Store, job: dict[str, object]) -> None:
    with Producer(config, recorder=store) as producer:
        producer.submit("echo", job)
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with ConsumeAndFeed(config, store, batch=2) as consumer:  # several transactions
        consumer.drain()


def test_progress_arrives_in_order_and_a_reconnect_misses_nothing(
    api_url: str, web_config: LoadedConfig, store: Store,
) -> None:
    with client(api_url) as http, http.stream(
            "GET", "/v1/events", params={"submission": "p-1"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith(": bystroq events")
        worker = threading.Thread(target=_run_job, args=(web_config, store, {
            "submissionID": "p-1", "progress": 5}))
        worker.start()
        try:
            live = _events(lines, until="completed")
        finally:
            worker.join()
    assert [e["name"] for e in live] == ["started", *["progress"] * 5, "completed"]
    assert [e["message"]["data"]["progress"] for e in live[1:6]] == [1, 2, 3, 4, 5]  # type: ignore[index]
    assert all(e["submissionID"] == "p-1" and e["category"] == "echo" for e in live)
    ids = [int(str(e["id"])) for e in live]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # Disconnect after the third event; reconnect from it: the rest, nothing twice.
    with client(api_url) as http:
        with http.stream("GET", "/v1/events", params={"after": "0", "follow": "false",
                                                      "category": "echo"}) as stream:
            first = _events(stream.iter_lines(), count=3)
        with http.stream("GET", "/v1/events", params={"follow": "false"},
                         headers={"Last-Event-ID": str(first[-1]["id"])}) as stream:
            rest = _events(stream.iter_lines())
    assert [e["id"] for e in first + rest] == ids


def test_filters_and_bad_requests(api_url: str, web_config: LoadedConfig,
                                  store: Store) -> None:
    _run_job(web_config, store, {"submissionID": "a", "fail": "x"})
    _run_job(web_config, store, {"submissionID": "b"})
    with client(api_url) as http:
        def names(**params: str) -> list[tuple[object, object]]:
            with http.stream("GET", "/v1/events", params={"after": "0", "follow": "false",
                                                          **params}) as stream:
                return [(e["submissionID"], e["name"]) for e in _events(stream.iter_lines())]

        assert names() == [("a", "started"), ("a", "failed"), ("b", "started"),
                           ("b", "completed")]
        assert names(submission="b") == [("b", "started"), ("b", "completed")]
        assert names(category="annotation") == []
        assert http.get("/v1/events", params={"category": "nope"}).status_code == 404
        bad = http.get("/v1/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400


def test_several_live_streams_get_the_same_events(api_url: str, web_config: LoadedConfig,
                                                  store: Store) -> None:
    import concurrent.futures

    opened = threading.Barrier(4)

    def listen(_: int) -> list[tuple[object, object]]:
        with client(api_url) as http, http.stream("GET", "/v1/events") as stream:
            lines = stream.iter_lines()
            next(lines)
            opened.wait()
            return [(e["submissionID"], e["name"]) for e in _events(lines, count=4)]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(listen, n) for n in range(3)]
        opened.wait()
        _run_job(web_config, store, {"submissionID": "m1"})
        _run_job(web_config, store, {"submissionID": "m2"})
        got = [s.result(timeout=30) for s in streams]
    expected = [("m1", "started"), ("m1", "completed"), ("m2", "started"),
                ("m2", "completed")]
    assert got == [expected] * 3


def test_a_running_jobs_progress_arrives_while_it_runs(
    api_url: str, web_config: LoadedConfig, store: Store, tubes: object,
) -> None:
    tube = web_config.category("echo").submission
    consumer = ConsumeAndFeed(web_config, store)
    consuming = threading.Thread(target=consumer.run)
    with Producer(web_config, recorder=store) as producer:
        producer.submit("echo", {"submissionID": "run-1", "progress": 3, "sleep_s": 3})
    worker = Worker(web_config, "echo", options=WorkerOptions(burst=True))
    working = threading.Thread(target=worker.run)
    try:
        with client(api_url) as http, http.stream(
                "GET", "/v1/events", params={"submission": "run-1"}) as stream:
            lines = stream.iter_lines()
            next(lines)
            consuming.start()
            working.start()
            progress = _events(lines, count=4)
            assert [e["name"] for e in progress] == ["started", *["progress"] * 3]
            assert tubes.counts(tube)["reserved"] == 1  # type: ignore[attr-defined]
            assert _events(lines, until="completed")[-1]["name"] == "completed"
    finally:
        working.join()
        consumer.stop()
        if consuming.is_alive():
            consuming.join()
        consumer.close()
        worker.close()
