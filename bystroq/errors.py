"""bystroq's exceptions: one base class, one subclass per kind of failure."""

from __future__ import annotations

from typing import Any


class BystroqError(Exception):
    """Base class of every error bystroq raises on purpose."""


class ConfigError(BystroqError):
    """The configuration file is missing, unreadable or does not match the schema."""


class DecodeError(BystroqError):
    """A message body is not JSON or does not match the expected Struct."""


class JobTooBig(BystroqError):
    """A job body is larger than the server's max-job-size (`index`: which job of a bulk
    submit, counting from 0, when it was one)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ServersUnavailable(BystroqError):
    """No configured beanstalkd server accepted a connection."""


class NotBeanstalkd(BystroqError, ConnectionError):
    """An address answered, but not as beanstalkd does (an HTTP server, say)."""

    def __init__(self, address: str, answered: str) -> None:
        super().__init__(f'{address} is not a beanstalkd server (it answered "{answered}"); '
                         "check its port in the config's beanstalkd.addresses")
        self.address = address
        self.answered = answered


class UnknownCategory(BystroqError):
    """A tube or category name is not in the configuration."""


class ListenerError(BystroqError):
    """A category's listener module cannot be imported or lacks the contract's names."""


class LeaseLost(BystroqError):
    """The worker no longer holds the job's reservation (TTR passed, job gone)."""


class JobTimeout(BystroqError):
    """A handler ran past its category's timeout."""


class Cancelled(BystroqError):
    """The submission was cancelled while its handler was running."""


class Retry(BystroqError):
    """Raised by a handler to ask for the job to be tried again after `delay_s`."""

    def __init__(self, delay_s: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason


class HandlerDied(BystroqError):
    """A handler's child process exited without reporting a result."""


class ShuttingDown(BystroqError):
    """The worker is stopping; the job is released for another worker."""


class HandlerError(BystroqError):
    """A handler failure reported from a child process (type and message as text)."""


class BatchError(BystroqError):
    """A batch cannot be created as asked (bad records file, bad option)."""


class DuplicateItem(BystroqError):
    """Two items of a batch share a submissionID."""

    def __init__(self, submission_id: str) -> None:
        super().__init__(f"two items share submissionID {submission_id!r}")
        self.submission_id = submission_id


class StoreUnavailable(BystroqError):
    """The records store cannot be reached (database down, disk full); try again later."""


class DuplicateSubmission(BystroqError):
    """A unique submit refused: a submission with this id is still queued or running."""


class SubmitOutcomeUnknown(BystroqError):
    """A put was sent but its answer never came: the job may or may not be on the server."""


class SubmitIncomplete(BystroqError):
    """A bulk submit stopped part-way: `submitted` (by index, None where not in) says which
    jobs are in, `unknown` which were sent and never answered (never submit those again),
    `not_put` which were not put (submitting those again is safe)."""

    def __init__(self, message: str, submitted: list[Any], unknown: list[int],
                 not_put: list[int]) -> None:
        super().__init__(message)
        self.submitted, self.unknown, self.not_put = submitted, unknown, not_put


class UnknownWorker(BystroqError):
    """No worker with that id in the live-workers table."""
