"""Dramatiq's side of the benchmark: the broker and actor its worker imports.

Started by scripts/bench_peers.py as `dramatiq bench_tasks_dramatiq` with scripts/ on the
path. Dramatiq declares its broker and actors when the module is imported; that is how a
Dramatiq app is written, so this module does it too.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = "bench"

broker = RedisBroker(url=REDIS_URL)
backend = RedisBackend(url=REDIS_URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=0)
def echo(index: int, message: str = "", sleep_s: float = 0.0) -> list[object]:
    """The benchmark's job: sleep, then return when it started and ended, and the message."""
    started = time.time()
    if sleep_s:
        time.sleep(sleep_s)
    return [started, time.time(), message]
