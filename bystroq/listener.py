"""The listener contract: a category's job Struct and its four functions (Bystro's shape)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from bystroq.errors import ListenerError
from bystroq.messages import BaseMessage, FailedJobMessage, InvalidJobMessage
from bystroq.progress import ProgressPublisher

HandlerFn = Callable[[ProgressPublisher, Any], Any]
SubmitMsgFn = Callable[[Any], Any]
CompletedMsgFn = Callable[[Any, Any], Any]
FailedMsgFn = Callable[[Any, int, BaseException], Any]


def default_failed_msg_fn(job: Any, queue_id: int, exc: BaseException) -> msgspec.Struct:
    """FailedJobMessage for a decoded job; InvalidJobMessage (queueID only) otherwise."""
    reason = describe(exc)
    if job is None or getattr(job, "submissionID", None) is None:
        return InvalidJobMessage(queueID=queue_id, reason=reason)
    return FailedJobMessage(submissionID=job.submissionID, reason=reason)


def describe(exc: BaseException) -> str:
    """`Type: message`, the way a failed event states its reason."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@dataclass(frozen=True)
class Listener:
    """What a worker needs to run one category."""

    job_data_type: type[BaseMessage]
    handler_fn: HandlerFn
    submit_msg_fn: SubmitMsgFn
    completed_msg_fn: CompletedMsgFn
    failed_msg_fn: FailedMsgFn = default_failed_msg_fn
    module: str | None = None


REQUIRED = ("job_data_type", "handler_fn", "submit_msg_fn", "completed_msg_fn")


def load_listener(module_name: str) -> Listener:
    """Import a listener module; a ListenerError names what is missing and the fix."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ListenerError(
            f"cannot import listener module {module_name!r}: {exc}; set the category's "
            f"`listener:` key to an importable module (run from the project directory or "
            f"install it)"
        ) from None
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise ListenerError(
            f"listener module {module_name!r} lacks {', '.join(missing)}; a listener defines "
            f"{', '.join(REQUIRED)} and optionally failed_msg_fn"
        )
    job_type = module.job_data_type
    if not (isinstance(job_type, type) and issubclass(job_type, BaseMessage)):
        raise ListenerError(
            f"{module_name}.job_data_type must be a msgspec Struct subclassing "
            f"bystroq.BaseMessage, got {job_type!r}"
        )
    return Listener(
        job_data_type=job_type,
        handler_fn=module.handler_fn,
        submit_msg_fn=module.submit_msg_fn,
        completed_msg_fn=module.completed_msg_fn,
        failed_msg_fn=getattr(module, "failed_msg_fn", default_failed_msg_fn),
        module=module_name,
    )


def check_importable(listener: Listener) -> None:
    """Process isolation imports the listener by module name in a child process: the
    module must define the same job type and functions at its top level."""
    module = listener.module
    fix = ("define job_data_type, handler_fn, submit_msg_fn and completed_msg_fn at the top "
           "level of an importable module, or use isolation inline")
    if not module or module == "__main__":
        raise ListenerError(f"process isolation needs the listener in an importable module, "
                            f"not {module or 'an unnamed one'}; {fix}")
    loaded = load_listener(module)
    differ = [name for name in (*REQUIRED, "failed_msg_fn")
              if getattr(loaded, name) is not getattr(listener, name)]
    if differ:
        raise ListenerError(f"process isolation: {module}.{differ[0]} is not the function "
                            f"this worker was given, so a child process would run other "
                            f"code; {fix}")
