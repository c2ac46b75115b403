"""What becomes of a reserved job, decided without I/O: from its attempt number, whether its
body decoded, what its handler run gave and the retry policy, the event it gets and what
is then done with the job on the server.

The slot asks at each stage it reaches (before decoding, after decoding, after the run);
`None` means "nothing decided yet: go on". Every rule is here, in the order it applies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bystroq.worker.execute import Execution
from bystroq.worker.policy import RetryPolicy


class Verdict(enum.Enum):
    """The event a job's attempt ends with."""

    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    INVALID = "invalid"  # the body did not decode: a failed event with its queueID
    GAVE_UP = "gave_up"  # past the attempt cap: a failed event (gaveUp), never decoded


class Disposition(enum.Enum):
    """What is done with the job once its event is stored."""

    DELETE = "delete"
    BURY = "bury"
    RELEASE = "release"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    disposition: Disposition
    delay_s: int = 0  # for RELEASE
    reason: str | None = None


def decide(
    attempt: int,
    policy: RetryPolicy,
    *,
    decoded: bool | None = None,
    execution: Execution | None = None,
    completed_fits: bool = True,
) -> Decision | None:
    """The decision for a job at the stage reached, or None to go on.

    The attempt cap comes first, before decoding: a body whose decoding kills the worker
    is capped too. A completed event too large for the server fails the job at once (a
    retry would make the same result).
    """
    if attempt > policy.reserve_cap:
        return Decision(Verdict.GAVE_UP, Disposition.BURY, reason=(
            f"gave up after {attempt - 1} attempts (max_attempts {policy.reserve_cap}); "
            f"buried for inspection"))
    if decoded is None:
        return None
    if not decoded:
        return Decision(Verdict.INVALID, Disposition.BURY)
    if execution is None:
        return None
    if execution.completed is not None:
        if not completed_fits:
            return Decision(Verdict.FAILED, Disposition.BURY)
        return Decision(Verdict.COMPLETED, Disposition.DELETE)
    reason = execution.error or "handler failed"
    delay = policy.retry_delay(attempt, execution.error_names, execution.retry_delay_s,
                               execution.retry_requested)
    if delay is not None:
        return Decision(Verdict.RETRYING, Disposition.RELEASE, delay_s=delay, reason=reason)
    return Decision(Verdict.FAILED, Disposition.BURY, reason=reason)
