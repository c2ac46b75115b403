"""What workers and operators say to each other, on tubes of their own.

Control: each worker watches `control_tube(worker_id)` on every server. `bystroq cancel`
puts a CancelRequest on the server the job came from (the `worker` field of the job's
started event names the worker); the worker stops that job's handler, the slot publishes
`cancelled` and deletes the job. `bystroq workers quiet|stop` put a QuietRequest or
StopRequest (tagged by `control`; a message without the tag is a CancelRequest).

Heartbeats: every worker puts a Heartbeat on its category's `heartbeat_tube` every
interval; the events consumer reads them into the live-workers table.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from bystroq.messages import SubmissionID

CONTROL_PREFIX = "bystroq.control."


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Stop the job `queueID` on this server, if this worker still runs it."""

    queueID: int
    submissionID: str | int | None = None
    reason: str = "cancelled by request"


class QuietRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="control",
                   tag="quiet"):
    """Stop reserving jobs; finish those running; keep beating (state `quiet`)."""

    reason: str = "quieted by request"


class StopRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="control",
                  tag="stop"):
    """Stop as on SIGTERM: stop reserving, let running jobs finish within the drain
    timeout, then exit."""

    reason: str = "stopped by request"


WorkerRequest = QuietRequest | StopRequest


class _Tagged(msgspec.Struct):
    control: str | None = None


_TAG = msgspec.json.Decoder(_Tagged)
_CANCEL = msgspec.json.Decoder(CancelRequest)
_WORKER_REQUEST = msgspec.json.Decoder(WorkerRequest)


def decode_request(body: bytes) -> CancelRequest | WorkerRequest:
    """A control message; msgspec.DecodeError (a ValidationError too) when it is none."""
    if _TAG.decode(body).control is None:
        cancel: CancelRequest = _CANCEL.decode(body)
        return cancel
    request: WorkerRequest = _WORKER_REQUEST.decode(body)
    return request


def control_tube(worker_id: str) -> str:
    return f"{CONTROL_PREFIX}{worker_id}"



WorkerState = Literal["running", "quiet", "stopping", "stopped"]
HEARTBEAT_PREFIX = "bystroq.workers."


class HeldJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job a worker runs now: its submission, and its place on a server."""

    submissionID: SubmissionID | None
    queueID: int
    server: str


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's announcement, put every `intervalS` on its category's heartbeat tube
    (`heartbeat_tube`), and once more as `stopped` when it exits cleanly."""

    worker: str
    host: str
    pid: int
    category: str
    state: WorkerState
    slotsBusy: int
    slotsTotal: int
    isolation: str
    version: str
    startedAt: float
    at: float
    intervalS: float
    jobs: list[HeldJob] = []


def heartbeat_tube(submission_tube: str) -> str:
    """The tube a category's workers beat on: one per category, so a consumer hears the
    workers of the categories it records (a name too long for a tube is hashed)."""
    name = HEARTBEAT_PREFIX + submission_tube
    if len(name.encode()) <= 200:
        return name
    return HEARTBEAT_PREFIX + hashlib.blake2b(submission_tube.encode(),
                                              digest_size=16).hexdigest()
