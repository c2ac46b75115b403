"""What a slot holds and what one step did: a job taken (with when it was asked for), a
completed job whose event is still to be put, and the Outcome of a step."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from bystroq.servers import (
    Reserved,
)
from bystroq.worker.lease import Lease


class Outcome(str, enum.Enum):
    """What one step did."""

    NONE = "none"  # no job was reserved
    COMPLETED = "completed"
    FAILED = "failed"
    INVALID = "invalid"
    GAVE_UP = "gave_up"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    RELEASED = "released"  # shutdown, or an event could not be stored
    LOST = "lost"  # the reservation was lost; nothing reported


@dataclass
class Taken(Reserved):
    """A job a slot reserved, and when it asked for it: a lease's age counts from before
    the reserve command was written (the server's TTR clock starts later, never earlier)."""

    asked_at: float = 0.0


@dataclass(frozen=True)
class Deferred:
    """A completed job whose event is still to be put (with the slot's next command)."""

    lease: Lease
    body: bytes
    log: Any

    @property
    def job(self) -> Reserved:
        return self.lease.job
