"""Celery's side of the benchmark: the app and task its worker imports.

Started by scripts/bench_peers.py as `celery -A bench_tasks_celery worker` with scripts/ on
the path. Redis is both the broker and the result backend; results are JSON (Celery's
default serializer).
"""

from __future__ import annotations

import os
import time

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(broker_connection_retry_on_startup=True)


@app.task(name="bench.echo")
def echo(index: int, message: str = "", sleep_s: float = 0.0) -> list[object]:
    """The benchmark's job: sleep, then return when it started and ended, and the message."""
    started = time.time()
    if sleep_s:
        time.sleep(sleep_s)
    return [started, time.time(), message]
