"""`/v1/batches`: create from JSON or an uploaded file (checked whole), list, status,
cancel; against a real uvicorn, beanstalkd and both stores."""

from __future__ import annotations

import httpx

from bystroq.config import LoadedConfig
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records import Store
from bystroq.worker import Worker, WorkerOptions
from tests.conftest import Tubes


def test_create_from_json_run_and_status(http: httpx.Client, web_config: LoadedConfig,
                                         store: Store, tubes: Tubes) -> None:
    created = http.post("/v1/batches", json={
        "category": "echo", "concurrency": 2, "shuffle": False,
        "records": [{"submissionID": f"j{n}", "message": str(n)} for n in range(4)]
        + [{"submissionID": "jf", "fail": "nope"}]})
    assert created.status_code == 201, created.text
    view = created.json()
    batch_id = view["batch"]["batchID"]
    assert created.headers["location"] == f"/v1/batches/{batch_id}"
    assert view["batch"]["total"] == 5 and view["counts"]["pending"] == 3
    assert tubes.counts(web_config.category("echo").submission)["ready"] == 2
    with ConsumeAndFeed(web_config, store) as consumer:
        for _ in range(10):
            with Worker(web_config, "echo", options=WorkerOptions(burst=True)) as worker:
                worker.run()
            consumer.drain()
            consumer.feed(force=True)
            status = http.get(f"/v1/batches/{batch_id}").json()
            if status["batch"]["state"] != "running":
                break
    assert status["done"] == 5 and status["percent"] == 100.0
    assert status["counts"]["completed"] == 4 and status["counts"]["failed"] == 1
    assert status["failures"] == [{"submissionID": "jf", "reason": "RuntimeError: nope"}]
    listed = http.get("/v1/batches").json()
    assert [b["batch"]["batchID"] for b in listed] == [batch_id]
    assert http.post(f"/v1/batches/{batch_id}/cancel").status_code == 409


def test_upload_csv_and_cancel(http: httpx.Client, web_config: LoadedConfig,
                               tubes: Tubes) -> None:
    csv = "submissionID,message\n" + "".join(f"u{n},m{n}\n" for n in range(6))
    created = http.post("/v1/batches/echo/upload", params={"concurrency": "3"},
                        content=csv.encode(), headers={"Content-Type": "text/csv"})
    assert created.status_code == 201, created.text
    batch_id = created.json()["batch"]["batchID"]
    assert created.json()["batch"]["concurrency"] == 3
    cancelled = http.post(f"/v1/batches/{batch_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["batch"]["state"] == "cancelled"
    assert tubes.counts(web_config.category("echo").submission)["ready"] == 0
    assert http.get("/v1/batches/nope").status_code == 404


def test_a_bad_record_is_named_and_nothing_is_created(http: httpx.Client) -> None:
    jsonl = b'{"submissionID": "a"}\n{"submissionID": "b", "sleep_s": "soon"}\n'
    refused = http.post("/v1/batches/echo/upload", content=jsonl,
                        headers={"Content-Type": "application/x-ndjson"})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail.startswith("records.jsonl:2: field `sleep_s`") and "/tmp" not in detail
    refused = http.post("/v1/batches", json={"category": "echo",
                                             "records": [{"submissionID": 1, "x": 1}]})
    assert refused.status_code == 422
    assert http.post("/v1/batches", json={"category": "echo", "records": [],
                                          "concurrency": 0}).status_code == 422
    assert http.post("/v1/batches", json={"category": "nope", "records": [
        {"submissionID": 1}]}).status_code == 404
    assert http.get("/v1/batches").json() == []
