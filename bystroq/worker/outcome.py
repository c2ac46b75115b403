"""What a slot holds and what one step did: a job taken (with when it was asked for, its
lease once its stats are known, and its outcome once it is settled), and the Outcome."""

from __future__ import annotations

import enum
from dataclasses import dataclass

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


@dataclass(eq=False)
class Taken(Reserved):
    """A job a slot reserved, and when it asked for it: a lease's age counts from before
    the reserve command was written (the server's TTR clock starts later, never earlier)."""

    asked_at: float = 0.0
    lease: Lease | None = None
    age: int = 0  # seconds since it was put, when its stats were read (the server's `age`)
    # Set once, when the job's outcome is known (for a completed job: its event stored).
    outcome: Outcome | None = None
