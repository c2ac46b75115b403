"""The running worker's info line: its rate and outcomes every SUMMARY_INTERVAL_S."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bystroq.worker.outcome import Outcome

# How often a running worker logs its rate and outcomes at info (one line a job is debug).
SUMMARY_INTERVAL_S = 10.0


class Summary:
    """The worker's info line every SUMMARY_INTERVAL_S: jobs a second and outcomes since
    the last one (failures are logged one by one as they happen)."""

    def __init__(self, log: Any, counts: Counter[Outcome]) -> None:
        self.log, self.counts = log, counts
        self.started = self.at = time.monotonic()
        self.last: Counter[Outcome] = Counter()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.at < SUMMARY_INTERVAL_S:
            return
        since = Counter(self.counts)
        since.subtract(self.last)
        jobs = sum(v for k, v in since.items() if k is not Outcome.NONE)
        if jobs:
            self.log.info("jobs done", jobs=jobs, per_s=round(jobs / (now - self.at), 1),
                          **{k.value: v for k, v in since.items() if v and k is not Outcome.NONE})
        self.last, self.at = Counter(self.counts), now

    def overall(self) -> dict[str, float]:
        jobs = sum(v for k, v in self.counts.items() if k is not Outcome.NONE)
        elapsed = time.monotonic() - self.started
        return {"per_s": round(jobs / elapsed, 1)} if jobs and elapsed > 0 else {}


