"""Running one decoded job through a listener, the same way inline and in a child process."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from bystroq.errors import Retry
from bystroq.listener import Listener, describe, traceback_of
from bystroq.messages import encode, stamp
from bystroq.progress import ProgressPublisher
from bystroq.worker.policy import exception_names


class Execution(msgspec.Struct, kw_only=True):
    """What became of a handler run; sent back from a child process as msgpack."""

    completed: bytes | None = None
    error: str | None = None
    error_names: list[str] = msgspec.field(default_factory=list)
    traceback: str | None = None
    retry_requested: bool = False
    retry_delay_s: float | None = None
    last_seq: int = 0


def execute(
    listener: Listener, job: Any, publisher: ProgressPublisher, fields: dict[str, Any]
) -> tuple[Execution, BaseException | None]:
    """Run the handler and build the completed message; an Exception becomes an error.

    BaseExceptions that are not Exceptions (the worker's stop signals) pass through.
    """
    try:
        result = listener.handler_fn(publisher, job)
        publisher.flush()
        message = listener.completed_msg_fn(job, result)
        seq = publisher.last_seq + 1
        body = encode(stamp(message, **fields, at=time.time(), seq=seq), publisher.wire)
        return Execution(completed=body, last_seq=seq), None
    except Retry as exc:
        return Execution(
            error=exc.reason, error_names=exception_names(exc), retry_requested=True,
            retry_delay_s=exc.delay_s, last_seq=publisher.last_seq,
        ), exc
    except Exception as exc:
        return Execution(
            error=describe(exc), error_names=exception_names(exc), last_seq=publisher.last_seq,
            traceback=traceback_of(exc),
        ), exc
