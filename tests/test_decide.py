"""decide(): every rule for what becomes of a job, without a server."""

from __future__ import annotations

from bystroq.config import RetryConfig
from bystroq.worker.decide import Decision, Disposition, Verdict, decide
from bystroq.worker.execute import Execution
from bystroq.worker.policy import RetryPolicy

PLAIN = RetryPolicy(max_attempts=None, retry=None)  # cap 5, no retry
RETRY = RetryPolicy(max_attempts=3, retry=RetryConfig(base_s=2, max_s=60, jitter=False))
DONE = Execution(completed=b'{"event": "completed"}', last_seq=1)
RAISED = Execution(error="ValueError: no", error_names=["ValueError"])


def test_the_cap_comes_before_anything_else() -> None:
    capped = decide(6, PLAIN)
    assert capped is not None and capped.verdict is Verdict.GAVE_UP
    assert capped.disposition is Disposition.BURY
    assert capped.reason == ("gave up after 5 attempts (max_attempts 5); "
                             "buried for inspection")
    assert decide(6, PLAIN, decoded=True, execution=DONE) == capped
    assert decide(5, PLAIN) is None  # at the cap: still run


def test_a_body_that_did_not_decode_is_invalid_and_buried() -> None:
    assert decide(1, PLAIN, decoded=False) == Decision(Verdict.INVALID, Disposition.BURY)
    assert decide(1, PLAIN, decoded=True) is None  # decoded: run it


def test_completed_is_deleted_unless_its_event_does_not_fit() -> None:
    assert decide(1, PLAIN, decoded=True, execution=DONE) == Decision(
        Verdict.COMPLETED, Disposition.DELETE)
    too_big = decide(1, RETRY, decoded=True, execution=DONE, completed_fits=False)
    assert too_big == Decision(Verdict.FAILED, Disposition.BURY)  # never retried


def test_a_failure_is_buried_without_a_retry_policy() -> None:
    assert decide(1, PLAIN, decoded=True, execution=RAISED) == Decision(
        Verdict.FAILED, Disposition.BURY, reason="ValueError: no")


def test_a_failure_is_released_with_backoff_until_the_last_attempt() -> None:
    first = decide(1, RETRY, decoded=True, execution=RAISED)
    assert first == Decision(Verdict.RETRYING, Disposition.RELEASE, delay_s=2,
                             reason="ValueError: no")
    second = decide(2, RETRY, decoded=True, execution=RAISED)
    assert second is not None and second.delay_s == 4
    last = decide(3, RETRY, decoded=True, execution=RAISED)
    assert last is not None and last.verdict is Verdict.FAILED


def test_an_explicit_retry_is_honoured_without_a_policy_and_keeps_its_delay() -> None:
    asked = Execution(error="later", error_names=["Retry"], retry_requested=True,
                      retry_delay_s=7.2)
    decision = decide(1, PLAIN, decoded=True, execution=asked)
    assert decision == Decision(Verdict.RETRYING, Disposition.RELEASE, delay_s=8,
                                reason="later")
    assert decide(5, PLAIN, decoded=True, execution=asked) == Decision(
        Verdict.FAILED, Disposition.BURY, reason="later")


def test_every_disposition_is_an_enum_member() -> None:
    assert {d.value for d in Disposition} == {"delete", "bury", "release"}
