"""Submitting jobs from outside a program: every job checked against its category's Struct
before the first is put, then put pipelined (Producer.submit_many), recorded as `queued`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from bystroq.config import DEFAULT_PRIORITY, LoadedConfig
from bystroq.errors import BystroqError, DecodeError, ListenerError, SubmitIncomplete
from bystroq.listener import load_listener
from bystroq.messages import JobDecoder, json_value
from bystroq.producer import Producer, SubmitRecorder, Submitted

CheckedJob = tuple[bytes, str | int | None]  # the body and its submissionID


def job_decoder(config: LoadedConfig, category: str) -> tuple[JobDecoder[Any] | None, str]:
    """The category's Struct decoder and "" when its listener imports; else None and why
    (the jobs are then checked as JSON objects only)."""
    try:
        listener = load_listener(config.resolve(category).listener)
    except ListenerError as exc:
        return None, str(exc)
    return JobDecoder(listener.job_data_type), ""


def check_job(decoder: JobDecoder[Any] | None, body: bytes, where: str) -> CheckedJob:
    """The body and its submissionID, once it passed the category's Struct (or is an
    object); a BystroqError says where it failed and that nothing was submitted."""
    try:
        if decoder is not None:
            return body, decoder.decode(body).submissionID
        data = json_value(body)
        if not isinstance(data, dict):
            raise DecodeError("expected a JSON object")
        submission_id = data.get("submissionID")
        return body, submission_id if isinstance(submission_id, str | int) else None
    except (DecodeError, msgspec.DecodeError) as exc:
        raise BystroqError(f"{where}: {exc}; nothing was submitted") from None


def jobs_file(path: Path) -> Iterator[tuple[str, bytes]]:
    """(`path:line`, job) for each non-blank line of a JSON-lines file."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield f"{path}:{number}", line.strip()


def submit_jobs(
    config: LoadedConfig, category: str, jobs: Sequence[CheckedJob],
    recorder: SubmitRecorder | None, *, priority: int = DEFAULT_PRIORITY, delay: int = 0,
    ttr: int | None = None,
) -> Iterator[tuple[Submitted, str | int | None]]:
    """Put checked jobs, in order: one with `submit`, many pipelined with `submit_many`;
    each handle with its submissionID. A bulk submit cut part-way yields the jobs that
    are in, then raises a BystroqError saying which are unknown and which were not put."""
    with Producer(config, recorder=recorder) as producer:
        if len(jobs) == 1:
            body, submission_id = jobs[0]
            yield producer.submit(category, body, priority=priority, delay=delay,
                                  ttr=ttr), submission_id
            return
        try:
            handles = producer.submit_many(category, [body for body, _ in jobs],
                                           priority=priority, delay=delay, ttr=ttr)
        except SubmitIncomplete as exc:
            for handle, (_, submission_id) in zip(exc.submitted, jobs, strict=True):
                if handle is not None:
                    yield handle, submission_id
            raise BystroqError(str(exc)) from None
        for handle, (_, submission_id) in zip(handles, jobs, strict=True):
            yield handle, submission_id
