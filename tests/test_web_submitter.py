"""Concurrent submits put together (bystroq.web.submitter): each request still gets its own
queueID and record, and an error in one request never fails the others. Against a real
beanstalkd and both stores; over HTTP with a real uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import msgspec
import pytest

from bystroq.config import LoadedConfig
from bystroq.errors import JobTooBig, ServersUnavailable
from bystroq.examples.echo import EchoJob
from bystroq.messages import encode
from bystroq.producer import Producer, Submitted
from bystroq.records import Store, open_store
from bystroq.testing import Beanstalkd, config_for, free_port
from bystroq.web import create_app
from bystroq.web.submitter import Submitter
from tests.conftest import Tubes
from tests.web_server import serving


def _echo(submission_id: str, message: str = "hi") -> bytes:
    return encode(EchoJob(submissionID=submission_id, message=message))


async def _submit_all(submitter: Submitter, jobs: Sequence[tuple[str, bytes, str]]
                      ) -> list[Submitted | BaseException]:
    return await asyncio.gather(*(submitter.submit(category, body, sid)
                                  for category, body, sid in jobs), return_exceptions=True)


def test_concurrent_submits_share_groups_and_keep_their_own_outcomes(
        config: LoadedConfig, store: Store, tubes: Tubes, server: Beanstalkd) -> None:
    jobs = [("echo", _echo(f"s{i}"), f"s{i}") for i in range(40)]
    # Over the server's max-job-size: refused alone, while the others go in.
    jobs.insert(17, ("echo", _echo("big", "x" * (server.max_job_size + 1)), "big"))
    annotation = msgspec.json.encode({"submissionID": "a1", "inputFilePath": "/in.tsv",
                                      "outputBasePath": "/out"})
    jobs.append(("annotation", annotation, "a1"))
    producer = Producer(config, recorder=store)
    submitter = Submitter(lambda: producer)
    try:
        outcomes = asyncio.run(_submit_all(submitter, jobs))
    finally:
        submitter.close()
        producer.close()

    assert isinstance(outcomes[17], JobTooBig)
    handles = [o for o in outcomes if isinstance(o, Submitted)]
    assert len(handles) == len(jobs) - 1
    assert len({h.job_id for h in handles}) == len(handles)  # a queueID each
    assert submitter.groups < len(jobs)  # requests were put together
    for (category, _, sid), outcome in zip(jobs, outcomes, strict=True):
        if sid == "big":
            continue
        assert isinstance(outcome, Submitted)
        assert outcome.submission_id == sid
        assert outcome.tube == config.category(category).submission
        record = store.get(sid)
        assert record is not None and record.state == "queued"
        assert record.queue_id == outcome.job_id and record.category == category
    big = store.get("big")
    assert big is not None and big.state == "failed"
    assert tubes.counts(config.category("echo").submission)["ready"] == 40
    assert tubes.counts(config.category("annotation").submission)["ready"] == 1


def test_no_server_fails_each_submit_with_its_own_record(prefix: str,
                                                         records_url: str) -> None:
    config = config_for([f"127.0.0.1:{free_port()}"], prefix=prefix)
    with open_store(records_url) as store:
        producer = Producer(config, recorder=store, wait_s=0.3)
        submitter = Submitter(lambda: producer)
        try:
            outcomes = asyncio.run(_submit_all(
                submitter, [("echo", _echo(f"d{i}"), f"d{i}") for i in range(6)]))
        finally:
            submitter.close()
            producer.close()
        assert all(isinstance(o, ServersUnavailable) for o in outcomes), outcomes
        for i in range(6):
            record = store.get(f"d{i}")
            assert record is not None and record.state == "failed"
            assert record.reason is not None and "submit failed" in record.reason


@pytest.mark.timeout(60)
def test_concurrent_requests_get_their_own_answers(
        server: Beanstalkd, prefix: str, records_url: str, store: Store) -> None:
    config = config_for([server.address], prefix=prefix, records=records_url)

    async def post_all(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:
            bodies: list[dict[str, object]] = [{"submissionID": f"h{i}", "message": "hi"}
                                               for i in range(30)]
            bodies[11] = {"submissionID": "bad", "message": 5}  # not the Struct's type
            return await asyncio.gather(*(http.post("/v1/submissions/echo", json=body)
                                          for body in bodies))

    with serving(create_app(config)) as url:
        responses = asyncio.run(post_all(url))
    assert responses[11].status_code == 422
    assert "message" in responses[11].json()["errors"][0]["field"]
    assert store.get("bad") is None
    accepted = [r.json() for i, r in enumerate(responses) if i != 11]
    assert all(r.status_code == 202 for i, r in enumerate(responses) if i != 11)
    assert len({a["queueID"] for a in accepted}) == len(accepted)
    for answer in accepted:
        record = store.get(answer["submissionID"])
        assert record is not None and record.queue_id == answer["queueID"]


def test_a_closed_submitter_starts_again(config: LoadedConfig, store: Store) -> None:
    producer = Producer(config, recorder=store)
    submitter = Submitter(lambda: producer)
    try:
        first = asyncio.run(_submit_all(submitter, [("echo", _echo("c1"), "c1")]))
        submitter.close()
        again = asyncio.run(_submit_all(submitter, [("echo", _echo("c2"), "c2")]))
    finally:
        submitter.close()
        producer.close()
    assert [type(o) for o in first + again] == [Submitted, Submitted]
    assert [store.get(k).state for k in ("c1", "c2")] == ["queued", "queued"]  # type: ignore[union-attr]
