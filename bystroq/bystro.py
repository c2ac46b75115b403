"""The Bystro drop-in: `bystro.beanstalkd.messages` and `bystro.beanstalkd.worker` in one.

A Bystro listener runs on bystroq when its `from bystro.beanstalkd.worker import ...` and
`from bystro.beanstalkd.messages import ...` lines become `from bystroq.bystro import ...`:
the same names, constructor shapes, attribute names (`submission_id`), wire (camelCase,
`submissionId`/`queueId`, Bystro's final spelling) and `listen()`, which never returns and
runs each handler in a child process forked for it (closures and lambdas need no pickling).

Underneath is bystroq's Worker: jobs are touched while they run, attempts are counted by
the server, a poison job is capped, SIGTERM drains, every event carries bystroq's optional
fields (queueId, attempt, worker, at, seq) so the records come out right. Where bystroq
differs on purpose (failed and invalid jobs are buried, not deleted) README's "Coming from
Bystro" says so.
"""

from __future__ import annotations

import abc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

import msgspec
import structlog
from msgspec import Struct, field

from bystroq import log as log_setup
from bystroq.config import CategoryConfig, Config, LoadedConfig
from bystroq.config import QueueConf as BystroqQueueConf
from bystroq.errors import ConfigError
from bystroq.progress import ProgressPublisher
from bystroq.worker import Listener, Worker, WorkerOptions
from bystroq.worker.fork import ForkRunner, bystro_reason

__all__ = [
    "BEANSTALK_ERR_TIMEOUT",
    "QUEUE_CONSUMER_SOCKET_TIMEOUT",
    "QUEUE_HEARTBEAT_INTERVAL",
    "QUEUE_JOB_HEARTBEAT_INTERVAL",
    "QUEUE_PRODUCER_TIMEOUT",
    "QUEUE_RESERVE_JOB_TIMEOUT_TIME",
    "BaseMessage",
    "BeanstalkJobID",
    "BeanstalkdProgressReporter",
    "CompletedJobMessage",
    "DebugProgressReporter",
    "Event",
    "FailedJobMessage",
    "ForkRunner",
    "InvalidJobMessage",
    "ProgressData",
    "ProgressMessage",
    "ProgressPublisher",
    "ProgressReporter",
    "ProgressStringMessage",
    "QueueConf",
    "Struct",
    "SubmissionID",
    "SubmittedJobMessage",
    "default_failed_msg_fn",
    "field",
    "get_progress_reporter",
    "listen",
    "loaded_config",
]

SubmissionID = str | int
BeanstalkJobID = int

# Bystro's settings, read from the same environment variables. bystroq's worker touches a
# job on a timer derived from its TTR and reserves with short waits, so only the names are
# kept for listeners that import them.
BEANSTALK_ERR_TIMEOUT = "TIMED_OUT"
QUEUE_HEARTBEAT_INTERVAL = max(1, float(os.getenv("BYSTRO_BEANSTALKD_HEARTBEAT_INTERVAL", "20")))
QUEUE_PRODUCER_TIMEOUT = max(1, float(os.getenv("BYSTRO_BEANSTALKD_PRODUCER_TIMEOUT", "30")))
QUEUE_RESERVE_JOB_TIMEOUT_TIME = int(os.getenv("BYSTRO_BEANSTALKD_RESERVE_JOB_TIMEOUT", "20"))
QUEUE_JOB_HEARTBEAT_INTERVAL = int(os.getenv("BYSTRO_BEANSTALKD_JOB_HEARTBEAT_INTERVAL", "20"))
QUEUE_CONSUMER_SOCKET_TIMEOUT = int(os.getenv("BYSTRO_BEANSTALKD_CONSUMER_SOCKET_TIMEOUT", "30"))

# Set to 1 to make listen() stop (SystemExit 0) once no job is ready: for tests and batch
# runs. Bystro's listen() never stops by itself.
BURST_ENV = "BYSTROQ_BYSTRO_BURST"
DEFAULT_UPDATE_INTERVAL = 100_000

_log = structlog.get_logger("bystroq.bystro")


from bystroq.bystro_messages import (  # noqa: E402  (after the settings, as in Bystro)
    BaseMessage,
    CompletedJobMessage,
    Event,
    FailedJobMessage,
    InvalidJobMessage,
    ProgressData,
    ProgressMessage,
    ProgressStringMessage,
    SubmittedJobMessage,
)


class QueueConf(Struct):
    """The `beanstalkd:` section as Bystro builds it: `QueueConf(**yaml["beanstalkd"])`.

    Extra per-category keys bystroq knows (ttr, max_attempts, retry, timeout, concurrency,
    isolation) may sit beside `submission` and `events`. Never changes the caller's dicts.
    """

    addresses: list[str]
    tubes: dict[str, Any]

    def split_host_port(self) -> tuple[list[str], list[str]]:
        """(hosts, ports) as two parallel lists of strings, as Bystro returns them."""
        hosts, ports = [], []
        for address in self.addresses:
            host, port = address.split(":")
            hosts.append(host)
            ports.append(port)
        return hosts, ports


# -- progress reporters ------------------------------------------------------------------


class _Method:
    """A reporter method callable directly or as Bystro called its Ray actor's:
    `reporter.increment.remote(n, True)` runs at once and returns the result."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else _Bound(self._fn, obj)


class _Bound:
    __slots__ = ("_fn", "_obj")

    def __init__(self, fn: Callable[..., Any], obj: Any) -> None:
        self._fn, self._obj = fn, obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(self._obj, *args, **kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(self._obj, *args, **kwargs)


class ProgressReporter(abc.ABC):
    """What a handler reports progress through (Bystro's abstract reporter)."""

    @abc.abstractmethod
    def increment(self, count: int, force: bool = False) -> None: ...

    @abc.abstractmethod
    def message(self, msg: str) -> None: ...

    @abc.abstractmethod
    def increment_and_write_progress_message(
        self, count: int, msg_prefix: str, msg_suffix: str = "", force: bool = False
    ) -> None: ...

    @abc.abstractmethod
    def clear_progress(self) -> None: ...

    @abc.abstractmethod
    def get_counter(self) -> int: ...


class BeanstalkdProgressReporter(ProgressReporter):
    """Publishes progress on the job's events tube, as Bystro's reporter actor did.

    A count goes out when it has grown by `update_interval` since the last one sent (or
    on `force`); text messages always go out. A failed send is logged, never raised.
    Unlike Bystro's, the last count held back is sent when the handler returns.
    """

    def __init__(
        self, publisher: ProgressPublisher, update_interval: int = DEFAULT_UPDATE_INTERVAL
    ) -> None:
        self._publisher = publisher
        self._submission_id: SubmissionID = publisher.message.submissionID
        self._update_interval = update_interval
        self._counter = 0
        self._last_updated = 0
        self._lock = threading.Lock()

    @_Method
    def increment(self, count: int, force: bool = False) -> None:
        """Add `count`; publish the count if due (or forced)."""
        with self._lock:
            self._counter += count
            if force or self._counter - self._last_updated >= self._update_interval:
                self._send_count()

    @_Method
    def increment_and_write_progress_message(
        self, count: int, msg_prefix: str, msg_suffix: str = "", force: bool = False
    ) -> None:
        """Add `count`; publish `"{prefix} {count} {suffix}"` if due (or forced)."""
        with self._lock:
            self._counter += count
            if force or self._counter - self._last_updated >= self._update_interval:
                self._last_updated = self._counter
                self._send(ProgressStringMessage(
                    self._submission_id, data=f"{msg_prefix} {self._counter} {msg_suffix}"))

    @_Method
    def message(self, msg: str) -> None:
        """Publish a line of text (never throttled)."""
        self._send(ProgressStringMessage(self._submission_id, data=msg))

    @_Method
    def clear_progress(self) -> None:
        """Reset the count to 0 (nothing is sent)."""
        with self._lock:
            self._counter = self._last_updated = 0

    @_Method
    def get_counter(self) -> int:
        return self._counter

    def flush(self) -> None:
        """Send the count held back, if any (the worker calls this when the handler ends)."""
        with self._lock:
            if self._counter != self._last_updated:
                self._send_count()

    def _send_count(self) -> None:
        self._last_updated = self._counter
        self._send(ProgressMessage(self._submission_id,
                                   data=ProgressData(progress=self._counter)))

    def _send(self, message: BaseMessage) -> None:
        try:
            self._publisher.put(message)
        except Exception as exc:  # Bystro's reporter printed these; progress is best effort
            _log.warning("progress not published", submissionId=self._submission_id,
                         error=f"{type(exc).__name__}: {exc}")


class DebugProgressReporter(ProgressReporter):
    """The reporter for no publisher: it only logs."""

    def __init__(self) -> None:
        self._counter = 0

    @_Method
    def increment(self, count: int, force: bool = False) -> None:
        self._counter += count
        _log.info(f"Processed {self._counter} records")

    @_Method
    def increment_and_write_progress_message(
        self, count: int, msg_prefix: str, msg_suffix: str = "", force: bool = False
    ) -> None:
        self._counter += count
        _log.info(f"{msg_prefix} {self._counter} {msg_suffix}")

    @_Method
    def message(self, msg: str) -> None:
        _log.info(msg)

    @_Method
    def clear_progress(self) -> None:
        self._counter = 0

    @_Method
    def get_counter(self) -> int:
        return self._counter


def get_progress_reporter(
    publisher: ProgressPublisher | None = None,
    update_interval: int = DEFAULT_UPDATE_INTERVAL,
) -> Any:
    """A handler's reporter for `publisher`; one that only logs when there is none.

    A ProgressReporter, typed Any as Bystro's Ray actor handle was, so that both its
    plain calls and Ray-style `reporter.increment.remote(n)` type-check in listeners."""
    if not publisher:
        return DebugProgressReporter()
    reporter = BeanstalkdProgressReporter(publisher, update_interval=update_interval)
    publisher.reporters.append(reporter)
    return reporter


# -- the worker ----------------------------------------------------------------------------

T = TypeVar("T", bound=BaseMessage)


def default_failed_msg_fn(
    job_data: Any, job_id: BeanstalkJobID, err: BaseException
) -> FailedJobMessage | InvalidJobMessage:
    """Bystro's: the exception's text as the reason; InvalidJobMessage for no job data."""
    reason = bystro_reason(err)
    if job_data is None:
        return InvalidJobMessage(queue_id=job_id, reason=reason)
    return FailedJobMessage(job_data.submission_id, reason=reason)


def listen(
    job_data_type: type[T],
    handler_fn: Callable[[ProgressPublisher, T], Any],
    submit_msg_fn: Callable[[T], Any],
    completed_msg_fn: Callable[[T, Any], Any],
    queue_conf: QueueConf,
    tube: str,
    failed_msg_fn: Callable[[T | None, BeanstalkJobID, Exception], Any] = default_failed_msg_fn,
) -> NoReturn:
    """Serve `tube` (a category of `queue_conf`) until stopped; never returns.

    SIGTERM or SIGINT stop it: running jobs get the drain time to finish, then it exits
    (SystemExit 0; 1 if a worker slot crashed). Each handler runs in a child process forked
    for it, unless the category sets `isolation: inline`. With BYSTROQ_BYSTRO_BURST=1 it
    exits once no job is ready.
    """
    logging.basicConfig(level=logging.INFO)  # Bystro did this at import; bystroq never does
    log_setup.configure()
    config = loaded_config(queue_conf)
    listener = Listener(
        job_data_type=job_data_type,  # type: ignore[arg-type] # Bystro's, not bystroq's, base
        handler_fn=handler_fn,
        submit_msg_fn=submit_msg_fn,
        completed_msg_fn=completed_msg_fn,
        failed_msg_fn=cast(Any, failed_msg_fn),  # Bystro types it for Exception only
        module=getattr(handler_fn, "__module__", None),
    )
    inline = dict(queue_conf.tubes[tube]).get("isolation") == "inline"
    options = WorkerOptions(
        burst=os.environ.get(BURST_ENV) == "1",
        isolation="inline" if inline else "fork",
        runner_factory=None if inline else ForkRunner,
    )
    with Worker(config, tube, listener, options) as worker:
        code = worker.run()
    sys.exit(code)


def loaded_config(queue_conf: QueueConf) -> LoadedConfig:
    """bystroq's configuration for a Bystro QueueConf, writing Bystro's final spelling
    (what `listen` runs its Worker with)."""
    tubes = {}
    for name, conf in queue_conf.tubes.items():
        try:
            tubes[name] = msgspec.convert(dict(conf), CategoryConfig)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise ConfigError(f"queue_conf.tubes.{name}: {exc}") from None
    try:
        beanstalkd = BystroqQueueConf(addresses=list(queue_conf.addresses), tubes=tubes)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"queue_conf: {exc}") from None
    return LoadedConfig(Config(beanstalkd=beanstalkd, wire="submissionId"),
                        source="<bystroq.bystro.listen() queue_conf>")
