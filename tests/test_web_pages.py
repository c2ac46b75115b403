"""Cursor pagination and Idempotency-Key, against a real uvicorn and both stores."""

from __future__ import annotations

import concurrent.futures

import httpx

from bystroq.config import LoadedConfig
from bystroq.records import Store
from tests.conftest import Tubes
from tests.web_server import client


def test_pages_over_1000_records_have_no_gaps_or_repeats_while_records_arrive(
    http: httpx.Client, store: Store,
) -> None:
    original = {f"r{n:04d}" for n in range(1000)}
    for n, sid in enumerate(sorted(original)):
        store.record_queued(sid, "echo", n + 1, "127.0.0.1:1")
    seen: list[object] = []
    cursor, pages, arrived = None, 0, 0
    while True:
        params = {"limit": "97", **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/submissions", params=params).json()
        seen += [item["submissionID"] for item in page["items"]]
        pages += 1
        # New records land before, among and after the ones still to come.
        for sid in (f"a-new{pages}", f"r{pages * 90:04d}x", f"z-new{pages}"):
            store.record_queued(sid, "echo", 5000 + arrived, "127.0.0.1:1")
            arrived += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a record was repeated"
    assert original <= set(seen), f"missing: {sorted(original - set(seen))[:5]}"
    assert seen == sorted(seen, key=str)
    assert pages >= 11


def test_same_key_and_body_return_the_first_response(
    http: httpx.Client, web_config: LoadedConfig, tubes: Tubes,
) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = http.post("/v1/submissions/echo", json={"submissionID": "i1"}, headers=headers)
    again = http.post("/v1/submissions/echo", json={"submissionID": "i1"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["location"] == first.headers["location"]
    assert tubes.counts(web_config.category("echo").submission)["ready"] == 1


def test_same_key_with_another_body_is_422(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k-2"}
    assert http.post("/v1/submissions/echo", json={"submissionID": "i2"},
                     headers=headers).status_code == 202
    other = http.post("/v1/submissions/echo", json={"submissionID": "i3"}, headers=headers)
    assert other.status_code == 422
    assert "another request body" in other.json()["detail"]


def test_a_rejected_body_does_not_use_up_its_key(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k-3"}
    assert http.post("/v1/submissions/echo", json={"message": 1},
                     headers=headers).status_code == 422
    assert http.post("/v1/submissions/echo", json={"submissionID": "i4"},
                     headers=headers).status_code == 202


def test_concurrent_requests_with_one_key_put_one_job(
    http: httpx.Client, web_config: LoadedConfig, tubes: Tubes,
) -> None:
    headers = {"Idempotency-Key": "k-race"}

    def post(_: int) -> httpx.Response:
        with client(str(http.base_url)) as c:
            return c.post("/v1/submissions/echo", json={"submissionID": "race"},
                          headers=headers)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(16)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409} and 202 in statuses
    replies = {r.json()["queueID"] for r in responses if r.status_code == 202}
    assert len(replies) == 1  # every 202 names the same job
    assert tubes.counts(web_config.category("echo").submission)["ready"] == 1


def test_expired_keys_are_forgotten_but_kept_a_day(store: Store) -> None:
    from bystroq.records import feeds

    assert feeds.claim_key(store, "old", "f", ttl_s=86_400, now=1000.0)[0]
    assert not feeds.claim_key(store, "old", "f", ttl_s=86_400, now=1000.0 + 86_399)[0]
    assert feeds.claim_key(store, "old", "g", ttl_s=86_400, now=1000.0 + 86_401)[0]
