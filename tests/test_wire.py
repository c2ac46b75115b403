"""Both generations of Bystro's wire: `submissionID`/`queueID` and camelCase
`submissionId`/`queueId`. Read everywhere; written as the config's `wire:` says."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from bystroq import (
    BaseMessage,
    CompletedJobMessage,
    ProgressPublisher,
    SubmittedJobMessage,
    Worker,
    WorkerOptions,
)
from bystroq.config import parse
from bystroq.consumer import Consumer
from bystroq.errors import ConfigError, DecodeError
from bystroq.messages import (
    InvalidJobMessage,
    JobDecoder,
    canonical,
    encode,
    record_key,
    stamp,
    submission_id_of,
)
from bystroq.producer import Producer
from bystroq.records import Store
from bystroq.records.model import orphan_id, parse_event
from bystroq.testing import Beanstalkd, config_for
from bystroq.worker import Listener
from tests.conftest import Tubes


class OldJob(BaseMessage, frozen=True, kw_only=True):
    path: str


class CamelJob(msgspec.Struct, frozen=True, rename="camel"):
    submission_id: str | int
    input_path: str


@pytest.mark.parametrize("body", [b'{"submissionID": "s1", "path": "p"}',
                                  b'{"submissionId": "s1", "path": "p"}',
                                  b'{"submissionId": "s1", "submissionID": "s1", "path": "p"}'])
def test_a_bystroq_job_decodes_from_either_spelling(body: bytes) -> None:
    assert JobDecoder(OldJob).decode(body) == OldJob(submissionID="s1", path="p")


@pytest.mark.parametrize("body", [b'{"submissionID": 7, "inputPath": "p"}',
                                  b'{"submissionId": 7, "inputPath": "p"}',
                                  '{"submissionID": 7, "inputPath": "p"}'])
def test_a_camel_job_decodes_from_either_spelling(body: bytes | str) -> None:
    assert JobDecoder(CamelJob).decode(body) == CamelJob(7, "p")


def test_both_spellings_differing_is_invalid() -> None:
    with pytest.raises(DecodeError, match="`submissionID` and `submissionId` differ"):
        JobDecoder(OldJob).decode(b'{"submissionID": "1", "submissionId": 1, "path": "p"}')
    with pytest.raises(DecodeError, match="`submissionId` and `submissionID` differ"):
        JobDecoder(CamelJob).decode(b'{"submissionId": "a", "submissionID": "b",'
                                    b' "inputPath": "p"}')


def test_the_other_spelling_inside_a_value_is_not_an_id() -> None:
    body = b'{"submissionID": "s", "path": "\\"submissionId\\""}'
    assert JobDecoder(OldJob).decode(body).path == '"submissionId"'
    with pytest.raises(DecodeError, match="missing required field `submissionID`"):
        JobDecoder(OldJob).decode(b'{"path": "p", "x": {"submissionId": 1}}')


def test_submission_id_of_reads_either_spelling() -> None:
    assert submission_id_of(b'{"submissionId": 3}') == 3
    assert submission_id_of(b'{"submissionID": "x"}') == "x"
    assert submission_id_of(b'{"other": 1}') is None


@pytest.mark.parametrize("spelling", ["submissionID", "submissionId"])
def test_events_parse_in_either_spelling(spelling: str) -> None:
    queue = spelling.replace("submission", "queue")
    done = parse_event(msgspec.json.encode({spelling: "1", "event": "completed", "n": 2}),
                       "cat", "srv")
    assert (done.submission_id, done.event) == ('"1"', "completed")  # the string "1"
    assert done.body == {"submissionID": "1", "event": "completed", "n": 2}
    invalid = parse_event(msgspec.json.encode({queue: 9, "reason": "r", "event": "failed"}),
                          "cat", "srv")
    assert (invalid.submission_id, invalid.queue_id) == (None, 9)


def test_an_event_with_both_spellings_differing_is_refused() -> None:
    with pytest.raises(DecodeError, match="`submissionID` and `submissionId` differ"):
        parse_event(b'{"event":"started","submissionID":1,"submissionId":2}', "c", "s")
    assert canonical({"queueId": 1, "queueID": 1}) == {"queueID": 1}


class Done(CompletedJobMessage, frozen=True, kw_only=True):
    results: dict[str, int]


def test_encode_writes_the_chosen_spelling() -> None:
    message = stamp(Done(submissionID=1, results={"n": 2}), queueID=9, seq=0)
    assert msgspec.json.decode(encode(message, "submissionId")) == {
        "event": "completed", "submissionId": 1, "queueId": 9, "seq": 0, "results": {"n": 2}}
    assert encode(message, "submissionID") == encode(message)
    invalid = InvalidJobMessage(queueID=4, reason="r")
    assert b'"queueId":4' in encode(invalid, "submissionId")


def test_stamp_adds_extension_fields_to_camel_structs_in_their_spelling() -> None:
    class Started(msgspec.Struct, frozen=True, rename="camel"):
        submission_id: str
        event: str = "started"

    stamped = stamp(Started("s"), queueID=5, attempt=1, worker="w", at=2.0, seq=0)
    assert stamped == {"submissionId": "s", "event": "started", "queueId": 5, "attempt": 1,
                       "worker": "w", "at": 2.0, "seq": 0}
    assert msgspec.json.decode(encode(stamped, "submissionID"))["submissionID"] == "s"


def test_the_wire_setting() -> None:
    text = "beanstalkd:\n  addresses: [127.0.0.1:11300]\n  tubes: {}\n"
    assert parse(text).config.wire == "submissionID"
    assert parse(text + "wire: submissionId\n").config.wire == "submissionId"
    expected = "key `wire`: 'submission_id' is not one of: submissionID, submissionId"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse(text + "wire: submission_id\n")


def _publish_halfway(publisher: ProgressPublisher, job: Any) -> int:
    publisher.publish("halfway")
    return 1


def _echo_listener(job_type: type[BaseMessage]) -> Listener:
    return Listener(
        job_data_type=job_type,
        handler_fn=_publish_halfway,
        submit_msg_fn=lambda job: SubmittedJobMessage(submissionID=job.submissionID),
        completed_msg_fn=lambda job, result: Done(submissionID=job.submissionID,
                                                  results={"n": result}),
    )


@pytest.mark.parametrize("wire", ["submissionID", "submissionId"])
def test_a_worker_writes_every_event_in_the_configured_spelling(
    server: Beanstalkd, prefix: str, tubes: Tubes, wire: str,
) -> None:
    config = config_for([server.address], prefix=prefix)
    config = type(config)(msgspec.structs.replace(config.config, wire=wire), config.source)
    with tubes.client(use=f"{prefix}echo") as client:
        client.put(b'{"submissionId": "a", "path": "p"}')
        client.put(b'{"submissionID": "b", "path": "p"}')
        client.put(b'{"path": "no id"}')
    with Worker(config, "echo", _echo_listener(OldJob), WorkerOptions(burst=True)) as worker:
        assert worker.run() == 0
    events = tubes.events(f"{prefix}echo_events")
    other = "submissionId" if wire == "submissionID" else "submissionID"
    queue = wire.replace("submission", "queue")
    assert [(e["event"], e.get(wire)) for e in events] == [
        ("started", "a"), ("progress", "a"), ("completed", "a"),
        ("started", "b"), ("progress", "b"), ("completed", "b"), ("failed", None)]
    assert all(other not in e and queue in e for e in events)


@pytest.mark.parametrize("spelling", ["submissionID", "submissionId"])
def test_bystroq_events_shows_either_spelling_alike(spelling: str) -> None:
    from bystroq.cli.render import event_line

    event = {"event": "progress", spelling: "s1", "data": {"progress": 3, "skipped": 0}}
    assert event_line("srv", event) == 'srv progress  s1 data={"progress": 3, "skipped": 0}'


@pytest.mark.parametrize("wire", ["submissionID", "submissionId"])
def test_the_producer_writes_jobs_in_the_configured_spelling_and_records_either(
    server: Beanstalkd, prefix: str, tubes: Tubes, wire: str, store: Store,
) -> None:
    config = config_for([server.address], prefix=prefix)
    config = type(config)(msgspec.structs.replace(config.config, wire=wire), config.source)
    with Producer(config, recorder=store) as producer:
        producer.submit("echo", OldJob(submissionID="s", path="p"))
        producer.submit("echo", {"submissionId": "m", "path": "p"})
        producer.submit("echo", b'{"submissionId": "b", "path": "p"}')
    with tubes.client(watch=f"{prefix}echo") as client:
        first = msgspec.json.decode(client.reserve(0).body)
    assert first == {wire: "s", "path": "p"}
    assert all(store.get(sid) is not None for sid in ("s", "m", "b"))


@pytest.mark.parametrize("spelling", ["submissionID", "submissionId"])
def test_the_consumer_builds_the_same_records_from_either_spelling(
    server: Beanstalkd, prefix: str, tubes: Tubes, store: Store, spelling: str,
) -> None:
    config = config_for([server.address], prefix=prefix)
    queue = spelling.replace("submission", "queue")
    run = {queue: 11, "attempt": 1, "worker": "w"}
    events = [
        {"event": "started", spelling: 5, **run, "at": 1.0, "seq": 0},
        {"event": "progress", spelling: 5, **run, "at": 2.0, "seq": 1,
         "data": {"progress": 40, "skipped": 2}},
        {"event": "completed", spelling: 5, **run, "at": 3.0, "seq": 2, "outFile": "/o"},
        {"event": "started", spelling: "5", queue: 12, "attempt": 1},
        {"event": "failed", spelling: "5", queue: 12, "attempt": 1, "reason": "boom"},
        {"event": "failed", queue: 13, "reason": "not JSON"},
    ]
    with tubes.client(use=f"{prefix}echo_events") as client:
        for event in events:
            client.put(msgspec.json.encode(event))
    with Consumer(config, store) as consumer:
        assert consumer.run(burst=True).applied == len(events)
    number, text = store.get(record_key(5)), store.get(record_key("5"))
    assert number is not None and text is not None
    assert (number.state, number.queue_id, number.progress, number.skipped, number.result,
            number.worker, number.started_at, number.finished_at) == (
        "completed", 11, 40, 2, {"outFile": "/o"}, "w", 1.0, 3.0)
    assert (text.state, text.queue_id, text.reason) == ("failed", 12, "boom")
    orphan = store.get(orphan_id(server.address, 13))
    assert orphan is not None and (orphan.state, orphan.reason) == ("failed", "not JSON")
