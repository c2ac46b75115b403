"""Retry policy: which failures are tried again, after what delay, and the poison cap."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from bystroq.config import CategoryConfig, RetryConfig

# Without `max_attempts`, a job reserved this many times (its workers kept dying) is buried.
DEFAULT_RESERVE_CAP = 5
# With a `retry:` policy but no `max_attempts`.
DEFAULT_MAX_ATTEMPTS_WITH_RETRY = 3


@dataclass(frozen=True)
class RetryPolicy:
    """Decides, from the attempt number and the failure, whether to retry and when."""

    max_attempts: int | None
    retry: RetryConfig | None

    @classmethod
    def of(cls, conf: CategoryConfig) -> RetryPolicy:
        return cls(conf.max_attempts, conf.retry)

    @property
    def reserve_cap(self) -> int:
        """Reservations after which a job is buried unrun (a poison job)."""
        if self.max_attempts is not None:
            return self.max_attempts
        if self.retry is not None:
            return DEFAULT_MAX_ATTEMPTS_WITH_RETRY
        return DEFAULT_RESERVE_CAP

    def retry_delay(
        self, attempt: int, exc_names: Sequence[str], requested_delay_s: float | None,
        explicit: bool,
    ) -> int | None:
        """Seconds to wait before the next attempt, or None to fail the job now.

        An explicit `bystroq.Retry` always retries while attempts remain; other exceptions
        retry only under a `retry:` policy whose `on` list matches (empty matches all).
        """
        if attempt >= self.reserve_cap:
            return None
        if not explicit:
            if self.retry is None:
                return None
            if self.retry.on and not any(name in self.retry.on for name in exc_names):
                return None
        if requested_delay_s is not None:
            return max(0, math.ceil(requested_delay_s))
        return self.backoff_s(attempt)

    def backoff_s(self, attempt: int) -> int:
        retry = self.retry or RetryConfig()
        delay: float = min(retry.max_s, retry.base_s * 2.0 ** max(0, attempt - 1))
        if retry.jitter:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return max(0, math.ceil(delay))


def exception_names(exc: BaseException) -> list[str]:
    """Short and qualified names of `exc`'s class and its bases, for matching `on`."""
    names: list[str] = []
    for cls in type(exc).__mro__:
        names += [cls.__name__, f"{cls.__module__}.{cls.__qualname__}"]
    return names
