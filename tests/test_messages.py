from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bystroq.errors import DecodeError
from bystroq.messages import (
    BaseMessage,
    CompletedJobMessage,
    Event,
    FailedJobMessage,
    InvalidJobMessage,
    JobDecoder,
    ProgressData,
    ProgressMessage,
    SubmittedJobMessage,
    encode,
    stamp,
)


class Job(BaseMessage, frozen=True, kw_only=True):
    inputFilePath: str
    count: int = 1


class Done(CompletedJobMessage, frozen=True, kw_only=True):
    results: dict[str, int]


def test_bystro_wire_names_and_no_unset_extensions() -> None:
    assert msgspec.json.decode(encode(SubmittedJobMessage(submissionID=7))) == {
        "event": "started", "submissionID": 7}
    assert msgspec.json.decode(encode(FailedJobMessage(submissionID="a", reason="r"))) == {
        "event": "failed", "submissionID": "a", "reason": "r"}
    assert msgspec.json.decode(encode(InvalidJobMessage(queueID=3, reason="bad"))) == {
        "event": "failed", "queueID": 3, "reason": "bad"}
    progress = ProgressMessage(submissionID=1, data=ProgressData(progress=5, skipped=1))
    assert msgspec.json.decode(encode(progress))["data"] == {"progress": 5, "skipped": 1}
    assert msgspec.json.decode(encode(ProgressMessage(submissionID=1, data="loading")))[
        "data"] == "loading"


def test_event_property_matches_the_tag() -> None:
    assert SubmittedJobMessage(submissionID=1).event is Event.STARTED
    assert Done(submissionID=1, results={}).event is Event.COMPLETED
    assert InvalidJobMessage(queueID=1, reason="x").event is Event.FAILED


def test_stamp_adds_extension_fields() -> None:
    body = encode(stamp(Done(submissionID=1, results={"n": 2}), queueID=9, attempt=2,
                        worker="w", at=1.5, seq=3))
    assert msgspec.json.decode(body) == {"event": "completed", "submissionID": 1, "queueID": 9,
                                         "attempt": 2, "worker": "w", "at": 1.5, "seq": 3,
                                         "results": {"n": 2}}


def test_stamp_leaves_foreign_structs_alone() -> None:
    class Other(msgspec.Struct):
        x: int

    other = Other(1)
    assert stamp(other, attempt=1) is other


@given(submission=st.one_of(st.text(), st.integers(-(2**63), 2**63 - 1)),
       path=st.text(), count=st.integers(-(2**63), 2**63 - 1))
def test_job_round_trip(submission: str | int, path: str, count: int) -> None:
    job = Job(submissionID=submission, inputFilePath=path, count=count)
    assert JobDecoder(Job).decode(encode(job)) == job


@given(message=st.text(), seq=st.integers(0, 10**9))
def test_completed_round_trip(message: str, seq: int) -> None:
    done = stamp(Done(submissionID=message, results={"a": seq}), seq=seq, attempt=1)
    assert msgspec.json.decode(encode(done), type=Done) == done


@pytest.mark.parametrize(("body", "expected"), [
    (b"{not json", "body is not valid JSON"),
    (b"{}", "missing required field `submissionID`"),
    (b'{"submissionID": 1}', "missing required field `inputFilePath`"),
    (b'{"submissionID": 1, "inputFilePath": "x", "count": "2"}',
     "field `count`: Expected `int`, got `str`"),
    (b"[1]", "Expected `object`, got `array`"),
])
def test_decode_errors_say_what_was_expected(body: bytes, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        JobDecoder(Job).decode(body)
    assert expected in str(info.value)
    assert "(job type Job)" in str(info.value)
