"""RQ's side of the benchmark: the job function its worker imports by dotted path."""

from __future__ import annotations

import time


def echo(index: int, message: str = "", sleep_s: float = 0.0) -> list[object]:
    """The benchmark's job: sleep, then return when it started and ended, and the message."""
    started = time.time()
    if sleep_s:
        time.sleep(sleep_s)
    return [started, time.time(), message]
