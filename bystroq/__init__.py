"""bystroq: a worker framework on Beanstalkd tubes, compatible with Bystro's listeners."""

from __future__ import annotations

from bystroq.config import Config, LoadedConfig, QueueConf, load
from bystroq.errors import (
    BystroqError,
    ConfigError,
    DecodeError,
    JobTooBig,
    ListenerError,
    Retry,
    ServersUnavailable,
)
from bystroq.listener import Listener
from bystroq.messages import (
    BaseMessage,
    CancelledJobMessage,
    CompletedJobMessage,
    Event,
    FailedJobMessage,
    InvalidJobMessage,
    ProgressData,
    ProgressMessage,
    RetryingJobMessage,
    SubmittedJobMessage,
)
from bystroq.producer import Producer, Submitted
from bystroq.progress import ProgressPublisher, ProgressReporter, get_progress_reporter
from bystroq.worker import Outcome, Worker, WorkerOptions, listen

__version__ = "0.1.0"

__all__ = [
    "BaseMessage",
    "BystroqError",
    "CancelledJobMessage",
    "CompletedJobMessage",
    "Config",
    "ConfigError",
    "DecodeError",
    "Event",
    "FailedJobMessage",
    "InvalidJobMessage",
    "JobTooBig",
    "Listener",
    "ListenerError",
    "LoadedConfig",
    "Outcome",
    "Producer",
    "ProgressData",
    "ProgressMessage",
    "ProgressPublisher",
    "ProgressReporter",
    "QueueConf",
    "Retry",
    "RetryingJobMessage",
    "ServersUnavailable",
    "Submitted",
    "SubmittedJobMessage",
    "Worker",
    "WorkerOptions",
    "get_progress_reporter",
    "listen",
    "load",
]
