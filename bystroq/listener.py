"""The listener contract: a category's job Struct and its four functions (Bystro's shape)."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bystroq.errors import HandlerError, ListenerError
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
    """`Type: message`, the way a failed event states its reason (a failure reported from
    a child process is already described: the same text inline and in a child)."""
    text = str(exc)
    if isinstance(exc, HandlerError):
        return text
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


TRACEBACK_MAX = 8000  # characters of a traceback kept in a failed event (the end of it)


def traceback_of(exc: BaseException) -> str:
    """The traceback of `exc` as text, at most TRACEBACK_MAX characters (the frames nearest
    the raise are kept; a cut one starts with an ellipsis)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return text if len(text) <= TRACEBACK_MAX else "…" + text[-(TRACEBACK_MAX - 1):]


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


def use_app_dir(app_dir: str | os.PathLike[str]) -> Path:
    """Import listener modules from `app_dir` first, as `python -m` does from the working
    directory (and uvicorn's --app-dir): the directory goes to the front of `sys.path`,
    and of PYTHONPATH for the child processes of process isolation. Call it from a
    command's entry point, never at import time."""
    path = Path(app_dir).resolve()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(path) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, paths)])
    return path


def load_listener(module_name: str) -> Listener:
    """Import a listener module; a ListenerError names what is missing and the fix."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_part_of(module_name, exc.name):
            raise ListenerError(f"listener module {module_name!r} failed to import: {exc}; "
                                "install what it needs") from None
        raise ListenerError(
            f"no listener module {module_name!r} (no module named {exc.name!r}); searched "
            f"{_searched()}; set the category's `listener:` key to an importable module, or "
            f"run from the directory that holds it (or pass --app-dir DIR)"
        ) from None
    except ImportError as exc:
        raise ListenerError(f"listener module {module_name!r} failed to import: {exc}"
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
    listener = Listener(
        job_data_type=job_type,
        handler_fn=module.handler_fn,
        submit_msg_fn=module.submit_msg_fn,
        completed_msg_fn=module.completed_msg_fn,
        failed_msg_fn=getattr(module, "failed_msg_fn", default_failed_msg_fn),
        module=module_name,
    )
    check_signatures(listener, module_name)
    return listener


# The contract's functions and the arguments the worker calls them with.
SIGNATURES = {
    "handler_fn": ("publisher", "job"),
    "submit_msg_fn": ("job",),
    "completed_msg_fn": ("job", "result"),
    "failed_msg_fn": ("job", "queue_id", "exception"),
}


def check_signatures(listener: Listener, where: str) -> None:
    """ListenerError when a function cannot take the arguments the worker passes it (so a
    wrong signature stops the worker at start, not every job)."""
    for name, params in SIGNATURES.items():
        fn = getattr(listener, name)
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            continue  # not introspectable (a builtin): called as it is
        try:
            signature.bind(*params)
        except TypeError as exc:
            raise ListenerError(
                f"{where}.{name}{signature} cannot be called as {name}({', '.join(params)}) "
                f"({exc}); give it those parameters") from None


def unknown_exception_names(names: list[str], module_name: str | None) -> list[str]:
    """The names of a retry policy's `on` list that match no exception class the listener
    module, its imports or the builtins can see (a misspelt name never matches)."""
    visible: list[object] = list(vars(builtins).values())
    if module_name is not None:
        with contextlib.suppress(ImportError):
            visible += list(vars(importlib.import_module(module_name)).values())
    known: set[str] = set()
    for obj in visible:
        if isinstance(obj, type) and issubclass(obj, BaseException):
            for cls in obj.__mro__:
                known |= {cls.__name__, f"{cls.__module__}.{cls.__qualname__}"}
    return [name for name in names if name not in known and not _names_a_class(name)]


def _names_a_class(dotted: str) -> bool:
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        return False
    try:
        found = getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return False
    return isinstance(found, type) and issubclass(found, BaseException)


def _is_part_of(module_name: str, missing: str) -> bool:
    """Whether `missing` is `module_name` or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")


def _searched() -> str:
    """The directories an import looked in, the first few by name."""
    places = [p or os.getcwd() for p in sys.path if not p.endswith((".zip",))]
    shown = ", ".join(places[:3])
    more = len(places) - 3
    return shown + (f" and {more} more (the installed packages)" if more > 0 else "")


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
