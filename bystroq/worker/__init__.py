"""Workers: the listener contract, the reserve loop, isolation, retries, shutdown."""

from __future__ import annotations

from typing import Any

from bystroq.config import Config, LoadedConfig, QueueConf
from bystroq.listener import (
    CompletedMsgFn,
    FailedMsgFn,
    HandlerFn,
    Listener,
    SubmitMsgFn,
    default_failed_msg_fn,
    load_listener,
)
from bystroq.messages import BaseMessage
from bystroq.worker.loop import Worker, WorkerOptions
from bystroq.worker.outcome import Outcome

__all__ = [
    "Listener",
    "Outcome",
    "Worker",
    "WorkerOptions",
    "listen",
    "load_listener",
]


def listen(
    job_data_type: type[BaseMessage],
    handler_fn: HandlerFn,
    submit_msg_fn: SubmitMsgFn,
    completed_msg_fn: CompletedMsgFn,
    queue_conf: QueueConf | dict[str, Any],
    tube: str,
    failed_msg_fn: FailedMsgFn = default_failed_msg_fn,
    **options: Any,
) -> int:
    """Bystro's entry point: run a worker for `tube` (a category of `queue_conf`).

    `queue_conf` is `QueueConf(**yaml["beanstalkd"])` or that dict; extra keyword
    arguments are WorkerOptions (e.g. burst=True, concurrency=4).
    """
    if isinstance(queue_conf, dict):
        queue_conf = QueueConf(**queue_conf)
    config = LoadedConfig(Config(beanstalkd=queue_conf), source="<listen() queue_conf>")
    listener = Listener(
        job_data_type=job_data_type,
        handler_fn=handler_fn,
        submit_msg_fn=submit_msg_fn,
        completed_msg_fn=completed_msg_fn,
        failed_msg_fn=failed_msg_fn,
        module=getattr(handler_fn, "__module__", None),
    )
    with Worker(config, tube, listener, WorkerOptions(**options)) as worker:
        return worker.run()
