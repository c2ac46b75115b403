"""A trivial category: returns its message. For tests, demos and benchmarks.

Optional knobs let tests exercise the failure paths: `fail` raises in the handler,
`sleep_s` makes the job take time, `exit_code` ends the process (as a crash would),
`fail_completed` raises in completed_msg_fn, `progress` reports that many steps.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bystroq import (
    BaseMessage,
    CompletedJobMessage,
    ProgressPublisher,
    SubmittedJobMessage,
    get_progress_reporter,
)


class EchoJob(BaseMessage, frozen=True, kw_only=True):
    """Job data: what to echo, and optional behaviour for tests."""

    message: str = ""
    sleep_s: float = 0.0
    fail: str | None = None
    exit_code: int | None = None
    fail_completed: bool = False
    progress: int = 0


class EchoCompleted(CompletedJobMessage, frozen=True, kw_only=True):
    """The completed event carries the echoed message."""

    message: str


job_data_type = EchoJob


def handler_fn(publisher: ProgressPublisher, job: EchoJob) -> str:
    if job.progress:
        reporter = get_progress_reporter(publisher, update_interval=1, min_interval_s=0)
        for _ in range(job.progress):
            reporter.increment(1)
    end = time.monotonic() + job.sleep_s
    while time.monotonic() < end:  # in slices, as Python work would be: a stop lands quickly
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    if job.exit_code is not None:
        os._exit(job.exit_code)
    if job.fail:
        raise RuntimeError(job.fail)
    return job.message


def submit_msg_fn(job: EchoJob) -> SubmittedJobMessage:
    return SubmittedJobMessage(submissionID=job.submissionID)


def completed_msg_fn(job: EchoJob, result: Any) -> EchoCompleted:
    if job.fail_completed:
        raise ValueError("completed_msg_fn was asked to fail")
    return EchoCompleted(submissionID=job.submissionID, message=str(result))
