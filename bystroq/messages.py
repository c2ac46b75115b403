"""The wire format: JSON messages, compatible with Bystro's beanstalkd messages.

Job data is a Struct subclassing `BaseMessage`. Events carry `event` and the
submission's id; bystroq's extension fields (queueID, attempt, worker, at, seq)
are optional and left out of the JSON when unset, so Bystro consumers keep working.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Generic, TypeVar

import msgspec

from bystroq.errors import DecodeError

SubmissionID = str | int


class Event(str, enum.Enum):
    """What an event message reports."""

    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"


class BaseMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Base of job data and events: the submission's primary key."""

    submissionID: SubmissionID


class EventMessage(BaseMessage, frozen=True, kw_only=True, omit_defaults=True, tag_field="event"):
    """Fields every event may carry besides `event` (all optional, left off when unset).

    `event` is the Struct's tag: always written, never set by hand.
    """

    queueID: int | None = None
    attempt: int | None = None
    worker: str | None = None
    at: float | None = None
    seq: int | None = None


class SubmittedJobMessage(EventMessage, frozen=True, kw_only=True, tag="started"):
    """The job was picked up by a worker and its handler is starting."""

    @property
    def event(self) -> Event:
        return Event.STARTED


class ProgressData(msgspec.Struct, frozen=True, kw_only=True):
    """Counts reported by a handler while it runs."""

    progress: int = 0
    skipped: int = 0


class ProgressMessage(EventMessage, frozen=True, kw_only=True, tag="progress"):
    """Progress of a running job: counts, or a line of text."""

    data: ProgressData | str | None = None

    @property
    def event(self) -> Event:
        return Event.PROGRESS


class CompletedJobMessage(EventMessage, frozen=True, kw_only=True, tag="completed"):
    """The handler finished; subclasses add the result's fields."""

    @property
    def event(self) -> Event:
        return Event.COMPLETED


class FailedJobMessage(EventMessage, frozen=True, kw_only=True, tag="failed"):
    """The handler failed, or the worker gave up after max_attempts (`gaveUp`)."""

    reason: str
    gaveUp: bool = False

    @property
    def event(self) -> Event:
        return Event.FAILED


class InvalidJobMessage(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="event", tag="failed"
):
    """A job body that could not be decoded: no trustworthy submissionID, only queueID."""

    queueID: int
    reason: str
    attempt: int | None = None
    worker: str | None = None
    at: float | None = None
    seq: int | None = None

    @property
    def event(self) -> Event:
        return Event.FAILED


class RetryingJobMessage(EventMessage, frozen=True, kw_only=True, tag="retrying"):
    """The attempt failed and the job was released to be tried again after delay_s."""

    reason: str
    delay_s: float

    @property
    def event(self) -> Event:
        return Event.RETRYING


class CancelledJobMessage(EventMessage, frozen=True, kw_only=True, tag="cancelled"):
    """The submission was cancelled; it will not run (again)."""

    reason: str = "cancelled"

    @property
    def event(self) -> Event:
        return Event.CANCELLED


M = TypeVar("M", bound=msgspec.Struct)

_ENCODE = msgspec.json.Encoder().encode
_DECODE_ANY = msgspec.json.Decoder().decode


class JobDecoder(Generic[M]):
    """Decodes job bodies into one Struct; built once per category and reused."""

    def __init__(self, struct: type[M]) -> None:
        self.struct = struct
        self._decoder = msgspec.json.Decoder(struct)

    def decode(self, body: bytes | str) -> M:
        """Decode and validate; a DecodeError says what was expected and what came."""
        try:
            return self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise DecodeError(
                f"{explain_validation(exc)} (job type {self.struct.__name__})"
            ) from None
        except msgspec.DecodeError as exc:
            raise DecodeError(
                f"body is not valid JSON: {exc} (job type {self.struct.__name__})"
            ) from None
        except RecursionError:
            raise DecodeError(f"{TOO_DEEP} (job type {self.struct.__name__})") from None
        except Exception as exc:  # e.g. the Struct's own __post_init__: still an invalid job
            raise DecodeError(
                f"job type {self.struct.__name__} rejected the body: "
                f"{type(exc).__name__}: {exc}"
            ) from None


TOO_DEEP = "body is nested too deeply to decode (arrays or objects inside each other)"


def json_value(body: bytes | str) -> Any:
    """Any JSON value; a DecodeError (never a RecursionError) when the body is not one."""
    try:
        return _DECODE_ANY(body)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError(TOO_DEEP) from None


class _Identified(msgspec.Struct):
    """Only a job's submissionID (unknown fields are skipped)."""

    submissionID: SubmissionID


_DECODE_ID = msgspec.json.Decoder(_Identified).decode


def submission_id_of(body: bytes) -> SubmissionID | None:
    """A job body's submissionID if it has one that decodes, else None; never raises."""
    try:
        return _DECODE_ID(body).submissionID
    except Exception:
        return None


def encode(message: Any) -> bytes:
    """A message (Struct, or anything msgspec encodes) as JSON bytes."""
    return _ENCODE(message)


def explain_validation(exc: msgspec.ValidationError) -> str:
    """msgspec's `Expected X - at `$.a`` as `field `a`: Expected X`."""
    text = str(exc)
    if " - at `$." in text:
        what, path = text.rsplit(" - at `$.", 1)
        return f"field `{path.rstrip('`')}`: {what}"
    if text.startswith("Object missing required field"):
        return text.replace("Object missing required field", "missing required field")
    return text


_STAMPED = (EventMessage, InvalidJobMessage)


def stamp(message: Any, **fields: Any) -> Any:
    """`message` with bystroq's extension fields set (left as is if it has none)."""
    if isinstance(message, _STAMPED):
        return msgspec.structs.replace(message, **fields)
    return message


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def record_key(submission_id: str | int) -> str:
    """The record id of a submissionID, keeping its type: the number 1 is `1`; the string
    "1" (or any string that reads as a number, or starts with a quote) is `"1"`, JSON-quoted,
    so two submissions whose ids differ only in type never share a record."""
    if isinstance(submission_id, int):
        return str(submission_id)
    if _INTEGER.fullmatch(submission_id) or submission_id.startswith('"'):
        return msgspec.json.encode(submission_id).decode()
    return submission_id


def key_to_submission_id(key: str) -> str | int:
    """The submissionID a record key stands for (the inverse of `record_key`)."""
    if key.startswith('"'):
        value = msgspec.json.decode(key)
        if isinstance(value, str):
            return value
    return int(key) if _INTEGER.fullmatch(key) else key
