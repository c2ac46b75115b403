"""How many jobs a slot reserves in one write, decided without I/O.

Jobs reserved ahead wait behind the one running, so the batch is as large as handlers are
short: it aims at `budget_s` of handler time per batch (from a moving average of handler
durations), grows by doubling while whole batches come back, and falls to 1 the moment a
handler runs longer than the budget (a slow job must not hold others hostage).
"""

from __future__ import annotations

from dataclasses import dataclass

# The most jobs one slot holds ahead of the one it runs.
MOST = 64
# Handler time a batch may hold its last job back by.
BUDGET_S = 0.01
# Weight of the newest duration in the moving average.
_ALPHA = 0.2


@dataclass
class BatchSize:
    """The next batch's size: `size` (1 at first, and after any long handler)."""

    most: int = MOST
    budget_s: float = BUDGET_S
    size: int = 1
    average_s: float | None = None

    def ran(self, seconds: float) -> None:
        """A handler took `seconds`."""
        if seconds > self.budget_s:
            self.size, self.average_s = 1, seconds
            return
        self.average_s = (seconds if self.average_s is None
                          else self.average_s + _ALPHA * (seconds - self.average_s))

    def reserved(self, asked: int, got: int) -> None:
        """A batch of `asked` brought `got` jobs: a full one may grow, a short one shrinks to
        what came (the queue is not deep enough for more)."""
        if got < asked:
            self.size = max(1, got)
            return
        self.size = min(2 * self.size, self.aim)

    @property
    def aim(self) -> int:
        """The size the handler time allows: budget / average duration, within 1..most."""
        if self.average_s is None or self.average_s <= 0:
            return self.most
        return max(1, min(self.most, int(self.budget_s / self.average_s)))
