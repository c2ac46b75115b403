"""The messages of Bystro's `bystro.beanstalkd.messages` (its final camelCase wire), as
`bystroq.bystro` exports them to listeners."""

from __future__ import annotations

import enum
from typing import Any, get_type_hints

from msgspec import Struct, field

SubmissionID = str | int
BeanstalkJobID = int


class Event(str, enum.Enum):
    """The four events a Bystro backend knows."""

    PROGRESS = "progress"
    FAILED = "failed"
    STARTED = "started"
    COMPLETED = "completed"


class BaseMessage(Struct, frozen=True, rename="camel"):
    """Base of job data and events: `submission_id`, `submissionId` on the wire."""

    submission_id: SubmissionID

    @classmethod
    def keys_with_types(cls) -> dict[str, Any]:
        """Python field name -> type, inherited fields included."""
        return get_type_hints(cls)

    @property
    def submissionID(self) -> SubmissionID:
        """The id under the name bystroq's worker reads."""
        return self.submission_id


class SubmittedJobMessage(BaseMessage, frozen=True):
    event: Event = Event.STARTED


class CompletedJobMessage(BaseMessage, frozen=True):
    event: Event = Event.COMPLETED


class FailedJobMessage(BaseMessage, frozen=True):
    reason: str
    event: Event = Event.FAILED


class InvalidJobMessage(Struct, frozen=True, rename="camel"):
    """A job that could not be decoded: only its beanstalkd job id (`queueId`)."""

    queue_id: BeanstalkJobID
    reason: str
    event: Event = Event.FAILED

    @classmethod
    def keys_with_types(cls) -> dict[str, Any]:
        return get_type_hints(cls)


class ProgressData(Struct):
    """Counts; mutable, as Bystro's reporter changes them in place."""

    progress: int = 0
    skipped: int = 0


class ProgressMessage(BaseMessage, frozen=True):
    event: Event = Event.PROGRESS
    data: ProgressData = field(default_factory=ProgressData)


class ProgressStringMessage(BaseMessage, frozen=True):
    data: str
    event: Event = Event.PROGRESS
