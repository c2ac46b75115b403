"""A trivial category: returns its message. For tests, demos and benchmarks.

Optional knobs let tests exercise the failure paths: `fail` raises in the handler,
`sleep_s` makes the job take time, `exit_code` ends the process (as a crash would),
`fail_completed` raises in completed_msg_fn, `progress` reports that many steps (with
`step_s`, one step every `step_s` seconds, against a total of `progress`),
`fail_until_file` fails until that file exists (so a buried job can be kicked to success).
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
    step_s: float = 0.0
    fail_until_file: str | None = None


class EchoCompleted(CompletedJobMessage, frozen=True, kw_only=True):
    """The completed event carries the echoed message."""

    message: str


job_data_type = EchoJob


def handler_fn(publisher: ProgressPublisher, job: EchoJob) -> str:
    if job.progress:
        reporter = get_progress_reporter(publisher, update_interval=1, min_interval_s=0,
                                         total=job.progress if job.step_s else None)
        for _ in range(job.progress):
            _sleep(job.step_s)
            reporter.increment(1)
    if job.fail_until_file is not None and not os.path.exists(job.fail_until_file):
        raise RuntimeError(f"{job.fail_until_file} does not exist yet")
    _sleep(job.sleep_s)
    if job.exit_code is not None:
        os._exit(job.exit_code)
    if job.fail:
        raise RuntimeError(job.fail)
    return job.message


def _sleep(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # in slices, as Python work would be: a stop lands quickly
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


def submit_msg_fn(job: EchoJob) -> SubmittedJobMessage:
    return SubmittedJobMessage(submissionID=job.submissionID)


def completed_msg_fn(job: EchoJob, result: Any) -> EchoCompleted:
    if job.fail_completed:
        raise ValueError("completed_msg_fn was asked to fail")
    return EchoCompleted(submissionID=job.submissionID, message=str(result))
