"""The HTTP API against a real uvicorn, a real beanstalkd and both stores: health,
problems, OpenAPI, submissions (submit, list with cursors, get, cancel, retry)."""

from __future__ import annotations

from dataclasses import replace

import httpx

from bystroq.config import LoadedConfig
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records import Store
from bystroq.testing import config_for
from bystroq.web import WebSettings, create_app
from bystroq.worker import Worker, WorkerOptions
from tests.conftest import Tubes
from tests.web_server import client, serving

PROBLEM = "application/problem+json"


def _work(config: LoadedConfig, store: Store) -> None:
    """Run every ready echo job, then apply their events."""
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with ConsumeAndFeed(config, store) as consumer:
        consumer.drain()


def _is_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    return body  # type: ignore[no-any-return]


def test_health_ready_and_openapi(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"ok": True}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["servers"][0]["ok"] is True
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/submissions/{category}" in doc["paths"]
    assert "/v1/submissions" in doc["paths"] and "/v1/events" in doc["paths"]


def test_readyz_is_503_when_a_server_is_down(records_url: str, prefix: str) -> None:
    from bystroq.testing import free_port

    config = config_for([f"127.0.0.1:{free_port()}"], prefix=prefix, records=records_url)
    with serving(create_app(config)) as url, client(url) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False and ready.json()["store"] is True
        assert ready.json()["servers"][0]["ok"] is False


def test_unknown_paths_and_methods_are_problems(http: httpx.Client) -> None:
    _is_problem(http.get("/v1/nothing"), 404)
    _is_problem(http.delete("/v1/submissions"), 405)
    _is_problem(http.get("/v1/submissions/nobody"), 404)
    _is_problem(http.post("/v1/submissions/nocategory", json={"submissionID": 1}), 404)


def test_submit_get_and_work(http: httpx.Client, web_config: LoadedConfig, tubes: Tubes,
                             store: Store) -> None:
    response = http.post("/v1/submissions/echo", json={"submissionID": "s-1",
                                                       "message": "hi"})
    assert response.status_code == 202, response.text
    put = response.json()
    assert put["submissionID"] == "s-1" and put["tube"] == web_config.category("echo").submission
    assert response.headers["location"] == "/v1/submissions/s-1"
    assert tubes.counts(put["tube"])["ready"] == 1
    queued = http.get("/v1/submissions/s-1").json()
    assert queued["submission"]["state"] == "queued"
    assert queued["submission"]["queueID"] == put["queueID"]
    _work(web_config, store)
    done = http.get("/v1/submissions/s-1").json()
    assert done["submission"]["state"] == "completed"
    assert done["submission"]["result"] == {"message": "hi"}
    assert [e["event"] for e in done["timeline"]] == ["started", "completed"]
    assert done["progress"]["percent"] == 100.0 and done["traceback"] is None


def test_submit_names_the_invalid_field(http: httpx.Client, tubes: Tubes,
                                        web_config: LoadedConfig) -> None:
    body = _is_problem(http.post("/v1/submissions/echo",
                                 json={"submissionID": 1, "sleep_s": "soon"}), 422)
    assert body["errors"] == [{"field": "body.sleep_s",
                               "message": "Expected `float`, got `str`"}]
    body = _is_problem(http.post("/v1/submissions/echo", json={"message": "x"}), 422)
    assert body["errors"][0]["field"] == "body.submissionID"  # type: ignore[index]
    body = _is_problem(http.post("/v1/submissions/echo", content=b"{nope"), 422)
    assert tubes.counts(web_config.category("echo").submission)["ready"] == 0


def test_submit_body_over_max_job_size_is_413(records_url: str, prefix: str,
                                              server: object) -> None:
    config = config_for([server.address], prefix=prefix, records=records_url)  # type: ignore[attr-defined]
    settings = replace(WebSettings.from_config(config, environ={}), max_body_bytes=100)
    with serving(create_app(config, settings)) as url, client(url) as http:
        _is_problem(http.post("/v1/submissions/echo",
                              json={"submissionID": 1, "message": "x" * 200}), 413)
        ok = http.post("/v1/submissions/echo", json={"submissionID": 1, "message": "x"})
        assert ok.status_code == 202


def test_failed_submission_shows_its_reason_and_can_be_retried(
    http: httpx.Client, web_config: LoadedConfig, store: Store,
) -> None:
    assert http.post("/v1/submissions/echo",
                     json={"submissionID": 7, "fail": "boom"}).status_code == 202
    _work(web_config, store)
    failed = http.get("/v1/submissions/7").json()
    assert failed["submission"]["state"] == "failed"
    assert "boom" in failed["traceback"]
    _is_problem(http.post("/v1/submissions/7/cancel"), 409)  # already failed
    retried = http.post("/v1/submissions/7/retry")
    assert retried.status_code == 202 and retried.json()["submissionID"] == 7
    assert http.get("/v1/submissions/7").json()["submission"]["state"] == "queued"
    _is_problem(http.post("/v1/submissions/7/retry"), 409)  # queued: nothing to retry
    _is_problem(http.post("/v1/submissions/nobody/retry"), 404)


def test_cancel_a_queued_submission(http: httpx.Client, web_config: LoadedConfig,
                                    tubes: Tubes) -> None:
    assert http.post("/v1/submissions/echo", json={"submissionID": "c"}).status_code == 202
    cancelled = http.post("/v1/submissions/c/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["result"] == "deleted"
    assert http.get("/v1/submissions/c").json()["submission"]["state"] == "cancelled"
    assert tubes.counts(web_config.category("echo").submission)["ready"] == 0
    _is_problem(http.post("/v1/submissions/c/cancel"), 409)


def test_list_filters(http: httpx.Client, web_config: LoadedConfig, store: Store) -> None:
    for n in range(3):
        http.post("/v1/submissions/echo", json={"submissionID": f"ok-{n}"})
    http.post("/v1/submissions/echo", json={"submissionID": "bad-1", "fail": "kaput"})
    _work(web_config, store)

    def ids(**params: str) -> list[object]:
        page = http.get("/v1/submissions", params=params)
        assert page.status_code == 200, page.text
        return [item["submissionID"] for item in page.json()["items"]]

    assert ids() == ["bad-1", "ok-0", "ok-1", "ok-2"]
    assert ids(state="failed") == ["bad-1"]
    assert ids(q="KAPUT") == ["bad-1"] and ids(q="ok-1") == ["ok-1"]
    assert ids(category="echo", state="completed") == ["ok-0", "ok-1", "ok-2"]
    assert ids(since="9999999999") == []
    assert ids(until="9999999999") == ["bad-1", "ok-0", "ok-1", "ok-2"]
    body = _is_problem(http.get("/v1/submissions", params={"state": "nope"}), 422)
    assert body["errors"][0]["field"] == "query.state"  # type: ignore[index]
    _is_problem(http.get("/v1/submissions", params={"limit": "0"}), 422)
    _is_problem(http.get("/v1/submissions", params={"cursor": "!!!"}), 422)


def test_the_cap_is_the_servers_max_job_size(records_url: str, prefix: str) -> None:
    from bystroq.testing import Beanstalkd

    small = Beanstalkd(max_job_size=300).start()
    try:
        config = config_for([small.address], prefix=prefix, records=records_url)
        with serving(create_app(config)) as url, client(url) as http:
            body = _is_problem(http.post("/v1/submissions/echo", json={
                "submissionID": 1, "message": "x" * 400}), 413)
            assert "300" in str(body["detail"])
            assert http.post("/v1/submissions/echo",
                             json={"submissionID": 1}).status_code == 202
    finally:
        small.kill()


def test_an_unexpected_error_is_a_500_problem(web_config: LoadedConfig) -> None:
    app = create_app(web_config)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with serving(app) as url, client(url) as http:
        body = _is_problem(http.get("/boom"), 500)
        assert "secret internals" not in str(body)
