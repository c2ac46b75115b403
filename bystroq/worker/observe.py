"""What a worker tells whoever watches it (metrics): the `WorkerObserver` Protocol, and
`NoObserver`, which does nothing.

Every call is made in the worker's own process (the parent, with `--isolation process`),
so several slots and child processes are counted once each: from the slot that holds the
job, except `finished` for an outcome a server's reply settles, made by whichever thread
read the reply (the slot, or the lease keeper's tick while a handler runs). A completed job
is reported when its completed event is stored (not when its handler returned), so a job
whose event could not be stored counts only as what it became. Jobs reserved ahead and
given back unrun are neither taken nor finished.
"""

from __future__ import annotations

from typing import Protocol

from bystroq.worker.outcome import Outcome


class WorkerObserver(Protocol):
    """The calls a worker makes as jobs pass through its slots."""

    def reserve_waited(self, seconds: float, got_job: bool) -> None:
        """A slot spent `seconds` in reserve; with a job it holds one more (in progress)."""

    def queue_waited(self, seconds: float) -> None:
        """A job taken had waited `seconds` since it was put (the server's `age`)."""

    def handler_ran(self, seconds: float) -> None:
        """A handler ran for `seconds` (whatever it ended with)."""

    def job_left(self) -> None:
        """A slot is done with its job (one fewer in progress)."""

    def finished(self, outcome: Outcome) -> None:
        """A job ended as `outcome` (never Outcome.NONE)."""

    def buried(self) -> None:
        """The server buried a job at the worker's request."""


class NoObserver:
    """Watches nothing: the worker's default."""

    def reserve_waited(self, seconds: float, got_job: bool) -> None:
        pass

    def queue_waited(self, seconds: float) -> None:
        pass

    def handler_ran(self, seconds: float) -> None:
        pass

    def job_left(self) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass

    def buried(self) -> None:
        pass
