"""Submitting jobs from outside a program: every job checked against its category's Struct
before the first is put, then put pipelined (Producer.submit_many), recorded as `queued`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from bystroq.config import DEFAULT_PRIORITY, LoadedConfig
from bystroq.errors import (
    BystroqError,
    DecodeError,
    DuplicateSubmission,
    JobTooBig,
    ListenerError,
    SubmitIncomplete,
)
from bystroq.listener import load_listener
from bystroq.messages import JobDecoder, json_value
from bystroq.producer import Producer, SubmitRecorder, Submitted
from bystroq.recording import UNIQUE_HOLD_S, unique_claims


class CheckedJob(NamedTuple):
    """A job that passed its category's Struct, and where it came from."""

    body: bytes
    submission_id: str | int | None
    where: str = ""


def job_decoder(config: LoadedConfig, category: str) -> tuple[JobDecoder[Any] | None, str]:
    """The category's Struct decoder and "" when its listener imports; else None and why
    (the jobs are then checked as JSON objects only)."""
    try:
        listener = load_listener(config.resolve(category).listener)
    except ListenerError as exc:
        return None, str(exc)
    return JobDecoder(listener.job_data_type, strict=config.category(category).strict), ""


def check_job(decoder: JobDecoder[Any] | None, body: bytes, where: str) -> CheckedJob:
    """The body and its submissionID, once it passed the category's Struct (or is an
    object); a BystroqError says where it failed and that nothing was submitted."""
    try:
        if decoder is not None:
            return CheckedJob(body, decoder.decode(body).submissionID, where)
        data = json_value(body)
        if not isinstance(data, dict):
            raise DecodeError("expected a JSON object")
        submission_id = data.get("submissionID")
        return CheckedJob(body, submission_id if isinstance(submission_id, str | int)
                          else None, where)
    except (DecodeError, msgspec.DecodeError) as exc:
        raise BystroqError(f"{where}: {exc}; nothing was submitted") from None


def unknown_fields(decoder: JobDecoder[Any] | None, body: bytes) -> list[str]:
    """Keys of a job the category's Struct does not have (ignored unless `strict:`)."""
    if decoder is None:
        return []
    data = json_value(body)
    if not isinstance(data, dict):
        return []
    known = {f.encode_name for f in msgspec.structs.fields(decoder.struct)}
    known |= {"submissionID", "submissionId"}  # either generation of the wire
    return [key for key in data if key not in known]


def jobs_file(path: Path) -> Iterator[tuple[str, bytes]]:
    """(`path:line`, job) for each non-blank line of a JSON-lines file."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # Excel's "UTF-8" byte-order mark
            if line.strip():
                try:
                    line.decode()
                except UnicodeDecodeError as exc:
                    raise BystroqError(
                        f"{path}:{number}: not UTF-8 text (byte {exc.start + 1} is "
                        f"{line[exc.start]:#04x}); save the file as UTF-8; nothing was "
                        "submitted") from None
                yield f"{path}:{number}", line.strip()


SLICE = 1000  # jobs put between two looks at `stop`


class SubmitStopped(BystroqError):
    """A submit of many jobs stopped part-way; the message says how to resume."""


def submit_jobs(
    config: LoadedConfig, category: str, jobs: Sequence[CheckedJob],
    recorder: SubmitRecorder | None, *, priority: int = DEFAULT_PRIORITY, delay: int = 0,
    ttr: int | None = None, skip: int = 0, stop: Callable[[], bool] | None = None,
    unique: bool | None = None,
) -> Iterator[tuple[Submitted, str | int | None]]:
    """Put checked jobs after the first `skip`, in order: one with `submit`, many pipelined
    with `submit_many` a slice at a time; each handle with its submissionID.

    When `stop()` turns true (Ctrl-C) the slice in flight ends and SubmitStopped says how
    many are in and the `--skip` that resumes; a slice cut part-way (a server failing)
    raises SubmitStopped naming the jobs in doubt. Every job put has its queued record."""
    total = len(jobs)
    if config.category(category).unique if unique is None else unique:
        seen: dict[object, str] = {}
        for job in jobs[skip:]:
            if job.submission_id in seen:
                raise DuplicateSubmission(
                    f"{job.where}: submission {job.submission_id!r} is already in this "
                    f"file ({seen[job.submission_id]}); nothing was submitted")
            seen[job.submission_id] = job.where
        # Every id is claimed before the first put: all of them go in, or none.
        with unique_claims(recorder, [job.submission_id for job in jobs[skip:]],
                           hold_s=UNIQUE_HOLD_S + 0.01 * (total - skip)):
            yield from submit_jobs(config, category, jobs, recorder, priority=priority,
                                   delay=delay, ttr=ttr, skip=skip, stop=stop, unique=False)
        return
    with Producer(config, recorder=recorder) as producer:
        limit = producer.max_job_size()
        too_big = next((job for job in jobs[skip:] if limit and len(job.body) > limit), None)
        if too_big is not None:
            raise JobTooBig(f"{too_big.where}: the job is {len(too_big.body)} bytes, over the "
                            f"servers' max-job-size of {limit} bytes; pass large data by "
                            "reference (a path or URL); nothing was submitted")
        if total - skip == 1:
            body, submission_id, _ = jobs[skip]
            yield producer.submit(category, body, priority=priority, delay=delay,
                                  ttr=ttr, unique=False), submission_id
            return
        for start in range(skip, total, SLICE):
            if stop is not None and stop():
                raise SubmitStopped(f"interrupted: submitted {start} of {total}; resume "
                                    f"with --skip {start}")
            part = jobs[start:start + SLICE]
            try:
                handles = producer.submit_many(category, [job.body for job in part],
                                               priority=priority, delay=delay, ttr=ttr,
                                               unique=False)
            except JobTooBig as exc:
                where = part[exc.index].where if exc.index is not None else ""
                raise JobTooBig(f"{where}: {exc}" if where else str(exc)) from None
            except SubmitIncomplete as exc:
                for handle, job in zip(exc.submitted, part, strict=True):
                    if handle is not None:
                        yield handle, job.submission_id
                raise SubmitStopped(_resume(exc, start, total)) from None
            for handle, job in zip(handles, part, strict=True):
                yield handle, job.submission_id


def _resume(exc: SubmitIncomplete, start: int, total: int) -> str:
    """How to go on after a slice (jobs from `start`) was cut part-way."""
    done = start + next((i for i, h in enumerate(exc.submitted) if h is None),
                        len(exc.submitted))
    message = f"{exc}; submitted {done} of {total} in order"
    if exc.unknown:
        lines = ", ".join(str(start + i + 1) for i in exc.unknown[:10])
        message += (f"; jobs {lines} were sent and never answered: they may run, do not "
                    "submit them again")
    later = [i for i, h in enumerate(exc.submitted) if h is not None and start + i >= done]
    if later:
        message += f"; {len(later)} later jobs are in too"
    return message + f"; resume with --skip {done}" + (
        " (after removing the jobs named above)" if exc.unknown or later else "")
