"""The dashboard's pages and actions over plain HTTP (no browser), against a real uvicorn,
beanstalkd, worker and consumer: every page's HTML, who may act, the audit log, dead
letters in bulk."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from bystroq.config import LoadedConfig
from bystroq.control import Heartbeat, HeldJob, control_tube
from bystroq.ops.batches import create_batch
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.producer import Producer
from bystroq.records import Store, open_store
from bystroq.testing import config_for, wait_until
from bystroq.web import WebSettings, create_app
from bystroq.worker import Worker, WorkerOptions
from tests.conftest import Tubes
from tests.web_server import serving

READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"


def run_jobs(config: LoadedConfig, store: Store, *jobs: dict[str, object]) -> None:
    """Submit `jobs`, run them to the end with a worker, apply their events."""
    with Producer(config, recorder=store) as producer:
        for job in jobs:
            producer.submit("echo", job)
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with ConsumeAndFeed(config, store) as consumer:
        consumer.drain()


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=20) as c:
        yield c


def _ok(http: httpx.Client, path: str, **params: str) -> str:
    response = http.get(path, params=params or None)  # {} would drop the path's query
    assert response.status_code == 200, (path, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    return response.text


def test_every_page_renders_what_the_store_and_servers_hold(
    http: httpx.Client, web_config: LoadedConfig, store: Store, tmp_path: Path,
) -> None:
    run_jobs(web_config, store, {"submissionID": "done-1", "message": "hi", "progress": 2},
             {"submissionID": "bad-1", "fail": "disk on fire"})
    with Producer(web_config, recorder=store) as producer:
        producer.submit("echo", {"submissionID": "waits-1"})
    records = tmp_path / "b.jsonl"
    records.write_text('{"message": "a"}\n{"message": "b"}\n')
    batch = create_batch(web_config, store, "echo", records, concurrency=1).batch_id

    overview = _ok(http, "/")
    assert "<svg" in overview and "1 completed" in overview and "1 failed" in overview
    assert "1 buried jobs" in overview  # a warning
    assert "no worker watching" in overview  # waits-1 is ready, nobody watches

    listed = _ok(http, "/submissions")
    for sid in ("done-1", "bad-1", "waits-1"):
        assert f'data-submission="{sid}"' in listed
    assert 'class="badge state-failed"' in listed and "disk on fire" in listed

    detail = _ok(http, "/submission", id="done-1")
    assert "&#34;message&#34;: &#34;hi&#34;" in detail  # the result, pretty JSON
    assert detail.count('class="event-') == 4  # started, progress x2, completed
    failed = _ok(http, "/submission", id="bad-1")
    assert "RuntimeError: disk on fire" in failed and "Retry</button>" in failed
    waiting = _ok(http, "/submission", id="waits-1")
    assert "Why it is not running yet" in waiting and 'data-kind="unwatched"' in waiting
    assert "Cancel</button>" in waiting

    batches = _ok(http, "/batches")
    assert f'data-batch="{batch}"' in batches and "<progress" in batches
    assert "Cancel the batch" in _ok(http, "/batch", id=batch)

    dead = _ok(http, "/dead")  # the category with buried jobs comes first
    assert "echo: 1 buried" in dead and "annotation: 0 buried" in dead
    assert "bad-1" in dead and "disk on fire" in dead and "buried" in dead
    assert re.search(r'<pre class="body">[^<]*&#34;fail&#34;: ?&#34;disk on fire', dead)

    queues = _ok(http, "/queues")
    assert web_config.category("echo").submission in queues and "Purge</button>" in queues
    assert "No action taken yet" in _ok(http, "/audit")
    assert _ok(http, "/login").count('type="password"') == 1
    missing = http.get("/submission", params={"id": "nope"})
    assert missing.status_code == 404 and "No submission &#39;nope&#39;" in missing.text
    script = http.get("/static/dashboard.js")
    assert script.status_code == 200 and "visibilitychange" in script.text


def test_search_filters_and_cursor_pages(http: httpx.Client, store: Store) -> None:
    for n in range(120):
        store.record_queued(f"s{n:03d}", "echo", n + 1, "127.0.0.1:1")
    store.record_submit_failed("needle-7", "echo", "the haystack was too big")
    first = _ok(http, "/submissions")
    assert first.count("data-submission=") == 50
    next_link = re.search(r'rel="next" href="([^"]+)"', first)
    assert next_link is not None
    second = _ok(http, next_link.group(1).replace("&amp;", "&"))
    # needle-7 sorts first: page one ends at s048, page two at s098.
    assert 'data-submission="s048"' not in second and 'data-submission="s098"' in second
    assert "First page" in second
    found = _ok(http, "/submissions", q="HAYSTACK")
    assert found.count("data-submission=") == 1 and "needle-7" in found
    assert _ok(http, "/submissions", state="failed").count("data-submission=") == 1
    assert _ok(http, "/submissions", state="queued", category="echo",
               within="1h").count("data-submission=") == 50
    assert "No submission matches" in _ok(http, "/submissions", batch="none")


def test_why_a_queued_job_waits_paused_and_unwatched(
    http: httpx.Client, web_config: LoadedConfig, store: Store,
) -> None:
    with Producer(web_config, recorder=store) as producer:
        producer.submit("echo", {"submissionID": "w1"})
    tube = web_config.category("echo").submission
    paused = http.post("/actions/queue", data={"tube": tube, "op": "pause",
                                                "seconds": "600"})
    assert paused.status_code == 303
    page = _ok(http, "/submission", id="w1")
    assert 'data-kind="paused"' in page and "is paused for" in page
    assert 'data-kind="unwatched"' in page
    audit = _ok(http, "/audit")
    assert "queue.pause" in audit and "600 s" in audit and ">local<" in audit


def test_why_a_job_waits_delayed_or_its_server_down(
    http: httpx.Client, web_config: LoadedConfig, store: Store, tubes: Tubes,
) -> None:
    tube = web_config.category("echo").submission
    with tubes.client(use=tube) as direct:
        job_id = direct.put(b'{"submissionID": "later"}', delay=900)
    store.record_queued("later", "echo", job_id, tubes.address[0] + f":{tubes.address[1]}")
    page = _ok(http, "/submission", id="later")
    assert 'data-kind="delayed"' in page and f"job {job_id} is delayed for" in page
    assert "(until 20" in page  # the time it becomes ready, in UTC
    store.record_queued("lost", "echo", 1, "127.0.0.1:1")
    assert 'data-kind="server-down"' in _ok(http, "/submission", id="lost")


def test_purge_needs_the_tube_name_typed(http: httpx.Client, web_config: LoadedConfig,
                                         tubes: Tubes) -> None:
    tube = web_config.category("echo").submission
    with Producer(web_config, recorder=None) as producer:
        producer.submit("echo", {"submissionID": "p1"})
    wrong = http.post("/actions/queue", data={"tube": tube, "op": "purge", "confirm": "x"})
    assert wrong.status_code == 422 and "type the tube's name" in wrong.json()["detail"]
    assert tubes.counts(tube)["ready"] == 1
    right = http.post("/actions/queue", data={"tube": tube, "op": "purge", "confirm": tube})
    assert right.status_code == 303 and tubes.counts(tube)["ready"] == 0


def test_dead_letters_counted_then_kicked_in_bulk_with_progress(
    http: httpx.Client, web_config: LoadedConfig, store: Store, tubes: Tubes,
) -> None:
    tube = web_config.category("echo").submission
    jobs: list[dict[str, object]] = [
        {"submissionID": f"d{n}", "fail": "quota" if n % 2 else "bad"} for n in range(6)]
    run_jobs(web_config, store, *jobs)
    assert tubes.counts(tube)["buried"] == 6
    confirm = _ok(http, "/dead/confirm", category="echo", op="delete", q="quota")
    assert "3 buried jobs" in confirm
    started = http.post("/actions/dead-bulk", data={"category": "echo", "op": "delete",
                                                     "q": "quota", "count": "3"})
    assert started.status_code == 303
    task_id = re.search(r"id=([^&]+)", started.headers["location"]).group(1)  # type: ignore[union-attr]
    progress: dict[str, object] = {}

    def finished() -> bool:
        progress.update(http.get("/dead/task.json", params={"id": task_id}).json())
        return progress["finished"] is True

    wait_until(finished, timeout_s=20)
    assert progress["acted"] == 3 and progress["done"] == 3
    assert tubes.counts(tube)["buried"] == 3
    assert "finished" in _ok(http, "/dead/task", id=task_id)
    # All that is left: counted from the server, kicked.
    assert "3 buried jobs" in _ok(http, "/dead/confirm", category="echo", op="kick")
    http.post("/actions/dead-bulk", data={"category": "echo", "op": "kick", "count": "3"})
    wait_until(lambda: tubes.counts(tube)["buried"] == 0, timeout_s=20)
    assert tubes.counts(tube)["ready"] == 3
    audit = _ok(http, "/audit")
    assert "dead.delete-all" in audit and "dead.delete-done" in audit
    assert "3 deleted" in audit and "dead.kick-all" in audit


@pytest.fixture
def secured(server: object, prefix: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    config = config_for([server.address], prefix=prefix, records=url)  # type: ignore[attr-defined]
    with open_store(url) as store:
        store.record_queued("q1", "echo", 424242, server.address)  # type: ignore[attr-defined]
    settings = WebSettings.from_config(config, environ={
        "BYSTROQ_TOKENS": f"read:{READ},write:{WRITE}"})
    with serving(create_app(config, settings)) as base:
        yield base, config.category("echo").submission


@contextmanager
def _login(base: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=20) as http:
        response = http.post("/login", data={"token": token, "next": "/queues"})
        assert response.status_code == 303 and response.headers["location"] == "/queues"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert token not in cookie
        yield http


def test_with_tokens_pages_need_a_login(secured: tuple[str, str]) -> None:
    base, _ = secured
    with httpx.Client(base_url=base, timeout=20) as http:
        response = http.get("/submissions", params={"state": "queued"})
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/submissions%3Fstate%3Dqueued"
        wrong = http.post("/login", data={"token": "not-a-token-at-all-0000"})
        assert wrong.status_code == 401 and "not one this server knows" in wrong.text
        elsewhere = http.post("/login", data={"token": WRITE},
                              headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403 and "set-cookie" not in elsewhere.headers
        http.cookies.set("bystroq_session", "cmVhZA.9999999999.00ff")
        assert http.get("/").status_code == 303  # a forged session is no session


def test_read_token_sees_no_buttons_and_its_actions_are_refused(
    secured: tuple[str, str], tubes: Tubes,
) -> None:
    base, tube = secured
    with _login(base, READ) as http:
        for path, params in (("/queues", {}), ("/submission", {"id": "q1"}),
                             ("/dead", {"category": "echo"})):
            page = _ok(http, path, **params)
            assert "/actions/" not in page, path
            assert "read-only" in page
        assert http.get("/v1/submissions").status_code == 200  # the cookie reads the API
        for action, form in (("queue", {"tube": tube, "op": "pause", "seconds": "60"}),
                             ("cancel", {"submission": "q1"}),
                             ("retry", {"submission": "q1"}),
                             ("batch-cancel", {"batch": "b1"}),
                             ("dead-one", {"category": "echo", "server": "s", "op": "kick",
                                           "queueID": "1"}),
                             ("dead-bulk", {"category": "echo", "op": "delete",
                                            "count": "0"}),
                             ("worker", {"worker": "w.1", "op": "stop"})):
            refused = http.post(f"/actions/{action}", data=form)
            assert refused.status_code == 403, action
            assert "read-only" in refused.json()["detail"]
        assert http.post("/v1/queues/echo/resume").status_code == 403
        assert "No action taken yet" in _ok(http, "/audit")
    with httpx.Client(base_url=base, timeout=20) as anonymous:
        assert anonymous.post("/actions/queue", data={"tube": tube, "op": "resume"}
                              ).status_code == 401


def test_write_token_acts_but_not_from_another_site(secured: tuple[str, str]) -> None:
    base, tube = secured
    with _login(base, WRITE) as http:
        page = _ok(http, "/queues")
        assert "Pause</button>" in page and "Purge</button>" in page
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
            forged = http.post("/actions/queue", data={"tube": tube, "op": "resume"},
                               headers=headers)
            assert forged.status_code == 403, headers
        done = http.post("/actions/queue", data={"tube": tube, "op": "resume"},
                         headers={"Origin": base, "Sec-Fetch-Site": "same-origin"})
        assert done.status_code == 303
        audit = _ok(http, "/audit")
        assert "queue.resume" in audit and "token-" in audit and tube in audit
        assert audit.count("<tr><td>") == 1  # the refused ones did nothing
        logged_out = http.post("/logout")
        assert logged_out.status_code == 303
        assert http.get("/").status_code == 303


def _beat(worker: str, **fields: object) -> Heartbeat:
    values: dict[str, object] = dict(
        worker=worker, host="host-a", pid=4242, category="echo", state="running",
        slotsBusy=1, slotsTotal=2, isolation="inline", version="0.1.0",
        startedAt=time.time() - 60, at=time.time(), intervalS=5.0,
        jobs=[HeldJob(submissionID="held-1", queueID=7, server="127.0.0.1:1")])
    values.update(fields)
    return Heartbeat(**values)  # type: ignore[arg-type]


def test_workers_page_and_overview_list_live_workers_and_quiet_one(
    http: httpx.Client, store: Store, tubes: Tubes, prefix: str,
) -> None:
    live, gone = f"{prefix}live.1", f"{prefix}gone.2"  # control tubes of this test's own
    store.save_beats([_beat(live),
                      _beat(gone, at=time.time() - 3600, jobs=[])])
    page = _ok(http, "/workers")
    assert f'data-worker="{live}"' in page and f'data-worker="{gone}"' not in page
    assert 'href="/submission?id=held-1"' in page and ">1/2<" in page
    assert "Quiet</button>" in page and "Stop</button>" in page
    everyone = _ok(http, "/workers", all="true")
    assert f'data-worker="{gone}"' in everyone and "state-gone" in everyone
    overview = _ok(http, "/")
    assert "Live workers" in overview and f'data-worker="{live}"' in overview
    asked = http.post("/actions/worker", data={"worker": live, "op": "quiet"})
    assert asked.status_code == 303 and "asked to quiet" in unquote(asked.headers["location"])
    assert tubes.counts(control_tube(live))["ready"] == 1
    refused = http.post("/actions/worker", data={"worker": gone, "op": "stop"})
    assert "nothing to stop" in unquote(refused.headers["location"])
    audit = _ok(http, "/audit")
    assert "worker.quiet" in audit and "worker.stop" in audit
