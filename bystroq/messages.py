"""The wire format: JSON messages, compatible with Bystro's beanstalkd messages.

Job data is a Struct subclassing `BaseMessage`. Events carry `event` and the
submission's id; bystroq's extension fields (queueID, attempt, worker, at, seq,
traceparent) are optional and left out of the JSON when unset, so Bystro consumers keep
working. What workers and operators say to each other (heartbeats, control requests) is in
bystroq.control.
Ids are read in both generations of Bystro's wire (`submissionID`/`queueID` and camelCase
`submissionId`/`queueId`) and written in the one `encode` is given (config.Wire).
"""

from __future__ import annotations

import enum
import functools
import re
import types
from typing import Any, Generic, TypeVar

import msgspec

from bystroq.config import Wire
from bystroq.errors import DecodeError

SubmissionID = str | int

# The id fields of each generation of the wire (see config.Wire); bystroq reads both.
ID_FIELDS: dict[str, tuple[str, str]] = {
    "submissionID": ("submissionID", "queueID"),
    "submissionId": ("submissionId", "queueId"),
}
# The optional key of a job body (and field of its events) holding its W3C trace context.
TRACEPARENT = "traceparent"
_TRACE_NEEDLE = b'"traceparent"'
_SPELLING_OF_KEY = {"submissionID": "submissionID", "queueID": "submissionID",
                    "submissionId": "submissionId", "queueId": "submissionId"}
_CANONICAL_KEY = {"submissionId": "submissionID", "queueId": "queueID"}


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
    traceparent: str | None = None  # the job's W3C trace context (bystroq.tracing)


class SubmittedJobMessage(EventMessage, frozen=True, kw_only=True, tag="started"):
    """The job was picked up by a worker and its handler is starting."""

    @property
    def event(self) -> Event:
        return Event.STARTED


class ProgressData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Counts reported by a handler while it runs; `total`, when the handler knows it,
    lets records show a percentage and an ETA (absent otherwise: Bystro's shape)."""

    progress: int
    skipped: int
    total: int | None = None


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
    traceback: str | None = None  # where the handler raised (bounded; see TRACEBACK_MAX)

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

    def __init__(self, struct: type[M], strict: bool = False) -> None:
        self.struct = struct
        self.strict = strict
        # `strict`: decode into a subclass that refuses fields the Struct does not have.
        target: type[M] = types.new_class(struct.__name__, (struct,),
                                          {"forbid_unknown_fields": True}) if strict else struct
        self._decoder = msgspec.json.Decoder(target)
        # (key this Struct expects, the other generation's) for its submission and queue ids.
        self._keys = _id_keys(struct)
        self._needles = [f'"{other}"'.encode() for _, other in self._keys]
        # A strict Struct refuses unknown keys: the trace context is dropped before.
        self._untrace = strict and TRACEPARENT not in {
            f.encode_name for f in msgspec.structs.fields(struct)}

    def decode(self, body: bytes | str) -> M:
        """Decode and validate; a DecodeError says what was expected and what came.

        A body in the other generation's spelling (`submissionId` for a Struct that
        expects `submissionID`, or the reverse) decodes the same; one with both spellings,
        differing, is invalid."""
        if self._needles and _mentions(body, self._needles):
            body = self._respelled(body)
        if self._untrace and _mentions(body, [_TRACE_NEEDLE]):
            body = _without_traceparent(body)
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


    def _respelled(self, body: bytes | str) -> bytes | str:
        try:
            data = json_value(body)
        except DecodeError:
            return body  # the Struct's own decoder says what is wrong
        if not isinstance(data, dict):
            return body
        for own, other in self._keys:
            if other not in data:
                continue  # the key was only inside a value
            value = data.pop(other)
            if own in data and not _same_id(data[own], value):
                raise DecodeError(
                    f"fields `{own}` and `{other}` differ ({data[own]!r} and {value!r}): "
                    f"one id, two values (job type {self.struct.__name__})"
                )
            data[own] = value
        return _ENCODE(data)


def _without_traceparent(body: bytes | str) -> bytes | str:
    try:
        data = json_value(body)
    except DecodeError:
        return body  # the Struct's own decoder says what is wrong
    if not isinstance(data, dict) or TRACEPARENT not in data:
        return body
    del data[TRACEPARENT]
    return _ENCODE(data)


_OTHER_SPELLING = {"submissionID": "submissionId", "submissionId": "submissionID",
                   "queueID": "queueId", "queueId": "queueID"}


def _id_keys(struct: type[msgspec.Struct]) -> list[tuple[str, str]]:
    """(key a Struct expects, the other generation's key) for its submission and queue ids."""
    names = ("submissionID", "submission_id", "queueID", "queue_id")
    return [(f.encode_name, _OTHER_SPELLING[f.encode_name])
            for f in msgspec.structs.fields(struct)
            if f.name in names and f.encode_name in _OTHER_SPELLING]


def _mentions(body: bytes | str, needles: list[bytes]) -> bool:
    raw = body.encode() if isinstance(body, str) else body
    return any(needle in raw for needle in needles)


def _same_id(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


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
    """Only a job's submission id, in either spelling (unknown fields are skipped)."""

    submissionID: SubmissionID | None = None
    submissionId: SubmissionID | None = None


_DECODE_ID = msgspec.json.Decoder(_Identified).decode


def submission_id_of(body: bytes) -> SubmissionID | None:
    """A job body's submission id (either spelling) if it has one that decodes, else None;
    never raises."""
    try:
        ids = _DECODE_ID(body)
    except Exception:
        return None
    return ids.submissionID if ids.submissionID is not None else ids.submissionId


def encode(message: Any, wire: Wire | None = None) -> bytes:
    """A message (Struct, or anything msgspec encodes) as JSON bytes; with `wire`, its
    top-level submission and queue ids in that spelling."""
    if wire is not None:
        if isinstance(message, msgspec.Struct):
            if spelling_of(type(message)) in (wire, None):
                return _ENCODE(message)
            message = msgspec.to_builtins(message)
        if isinstance(message, dict):
            message = respell(message, wire)
    return _ENCODE(message)


@functools.lru_cache(maxsize=256)
def spelling_of(struct: type[msgspec.Struct]) -> Wire | None:
    """Which generation of the wire a Struct's id fields are spelled in (None: it has none)."""
    for key in struct.__struct_encode_fields__:
        if key in _SPELLING_OF_KEY:
            return "submissionID" if _SPELLING_OF_KEY[key] == "submissionID" else "submissionId"
    return None


def respell(data: dict[str, Any], wire: Wire) -> dict[str, Any]:
    """`data` with its top-level id keys spelled as `wire` spells them (order kept)."""
    submission, queue = ID_FIELDS[wire]
    names = {"submissionID": submission, "submissionId": submission,
             "queueID": queue, "queueId": queue}
    return {names.get(key, key): value for key, value in data.items()}


def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """An event read in either spelling, with its ids under `submissionID`/`queueID`;
    DecodeError if it carries both spellings of one id with different values."""
    if "submissionId" not in data and "queueId" not in data:
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _CANONICAL_KEY.get(key, key)
        if name in out and not _same_id(out[name], value):
            other = next(k for k, v in _CANONICAL_KEY.items() if v == name)
            raise DecodeError(f"fields `{name}` and `{other}` differ ({out[name]!r} and "
                              f"{value!r}): an event is about one submission")
        out[name] = value
    return out


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
    """`message` with bystroq's extension fields set.

    A bystroq event gets them as its own fields; another Struct that carries a submission
    or queue id (a Bystro message, camelCase or not) becomes a dict with them added in its
    spelling (`queueId` beside `submissionId`), keys it has already kept as they are; any
    other message is left as is."""
    if isinstance(message, _STAMPED):
        return msgspec.structs.replace(message, **fields)
    if isinstance(message, msgspec.Struct):
        spelling = spelling_of(type(message))
        if spelling is None:
            return message
        data = msgspec.to_builtins(message)
        queue_key = ID_FIELDS[spelling][1]
        for name, value in fields.items():
            key = queue_key if name == "queueID" else name
            if value is not None and key not in data:
                data[key] = value
        return data
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
