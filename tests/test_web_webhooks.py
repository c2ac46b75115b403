"""Event hooks and webhooks: every applied event, in order, signed, retried until the
receiver takes it, each attempt logged; against real servers and both stores."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bystroq.config import LoadedConfig, parse
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.ops.hooks import EventView, Hook
from bystroq.producer import Producer
from bystroq.records import Store
from bystroq.testing import config_for, config_text, free_port, wait_until
from bystroq.web import create_app
from bystroq.worker import Worker, WorkerOptions
from tests.web_server import client, serving

SECRET = "webhook-secret-0123456789"


class Receiver:
    """An HTTP server that records the POSTs it gets and refuses the first `fail`."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < receiver.fail:
                    receiver.refused += 1
                    self.send_response(500)
                else:
                    receiver.got.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail=2) as r:
        yield r


def _run(config: LoadedConfig, store: Store, *jobs: dict[str, object]) -> None:
    with Producer(config, recorder=store) as producer:
        for job in jobs:
            producer.submit("echo", job)
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with ConsumeAndFeed(config, store) as consumer:
        consumer.drain()


def test_python_hook_gets_typed_events_at_least_once(server: object, prefix: str,
                                                     store: Store) -> None:
    config = config_for([server.address], prefix=prefix)  # type: ignore[attr-defined]
    got: list[EventView] = []
    fail_once = [True]

    def callback(event: EventView) -> None:
        if event.event == "completed" and fail_once[0]:
            fail_once[0] = False
            raise RuntimeError("the backend's table is locked")
        got.append(event)

    hook = Hook(store, "backend", callback, from_start=True)
    _run(config, store, {"submissionID": "h1"})
    assert hook.step() == 1  # started; then the callback raised on completed
    hook.retry_at = 0  # skip the backoff
    assert hook.step() == 1
    assert [(e.submission_id, e.event) for e in got] == [("h1", "started"), ("h1", "completed")]
    assert isinstance(got[1], EventView) and got[1].message["message"] == ""
    # A restarted process (a new Hook under the same name) resumes after them.
    hook.release()
    again = Hook(store, "backend", got.append)
    assert again.step() == 0
    _run(config, store, {"submissionID": "h2"})
    assert again.step() == 2 and got[-1].submission_id == "h2"


def test_webhooks_are_signed_retried_and_logged(server: object, prefix: str,
                                                records_url: str, store: Store,
                                                receiver: Receiver) -> None:
    extra = f"web:\n  webhooks:\n    - url: {receiver.url}\n      secret: {SECRET}\n"
    config = parse(config_text([server.address], prefix=prefix,  # type: ignore[attr-defined]
                               records=records_url) + extra)
    with serving(create_app(config)) as url, client(url) as http:
        wait_until(lambda: http.get("/v1/webhooks").json()[0]["deliveredUpTo"] is not None)
        _run(config, store, {"submissionID": "w1"})
        wait_until(lambda: len(receiver.got) == 2, timeout_s=20)
        state = http.get("/v1/webhooks").json()
        log = http.get("/v1/webhooks/deliveries").json()
    bodies = [json.loads(body) for _, body in receiver.got]
    assert [(b["submissionID"], b["event"]) for b in bodies] == [("w1", "started"),
                                                                 ("w1", "completed")]
    for headers, body in receiver.got:
        timestamp = headers["X-Bystroq-Timestamp"]
        expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        assert headers["X-Bystroq-Signature"] == f"v1={expected}"
        assert headers["X-Bystroq-Event-Id"] == str(json.loads(body)["id"])
    first = bodies[0]["id"]
    attempts = sorted((d["eventId"], d["attempt"], d["status"]) for d in log)
    assert attempts == [(first, 1, 500), (first, 2, 500), (first, 3, 204),
                        (bodies[1]["id"], 1, 204)]
    assert state[0]["deliveredUpTo"] == bodies[1]["id"]


def test_one_process_at_a_time_runs_a_hook(server: object, prefix: str,
                                           store: Store, records_url: str) -> None:
    from bystroq.records import open_store

    config = config_for([server.address], prefix=prefix)  # type: ignore[attr-defined]
    first_got: list[EventView] = []
    second_got: list[EventView] = []
    with open_store(records_url) as other_store:
        first = Hook(store, "shared", first_got.append, from_start=True)
        second = Hook(other_store, "shared", second_got.append, from_start=True)
        _run(config, store, {"submissionID": "l1"})
        assert first.step() == 2 and second.step() == 0
        first.release()  # a clean stop: the other takes over at once, from the cursor
        _run(config, store, {"submissionID": "l2"})
        assert second.step() == 2 and first.step() == 0
    assert [(e.submission_id, e.event) for e in first_got + second_got] == [
        ("l1", "started"), ("l1", "completed"), ("l2", "started"), ("l2", "completed")]


def test_a_lease_left_by_a_dead_process_runs_out(store: Store) -> None:
    from bystroq.records import feeds

    assert feeds.lease_hook(store, "h", "a", 30, now=1000.0)
    assert feeds.lease_hook(store, "h", "a", 30, now=1020.0)  # renewed, to 1050
    assert not feeds.lease_hook(store, "h", "b", 30, now=1049.0)
    assert feeds.lease_hook(store, "h", "b", 30, now=1051.0)
    assert feeds.hook_cursor(store, "h") is None  # leased, never ran
