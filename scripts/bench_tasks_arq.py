"""arq's side of the benchmark: the coroutine its worker runs and the worker's settings.

Started by scripts/bench_peers.py as `arq bench_tasks_arq.WorkerSettings` with scripts/ on
the path. Jobs and results are JSON (arq's default is pickle), the same on both sides.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from arq.connections import RedisSettings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = "bench-arq"


def serialize(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data)
    return loaded


async def echo(ctx: dict[str, Any], index: int, message: str = "",
               sleep_s: float = 0.0) -> list[object]:
    """The benchmark's job: sleep (asyncio's way), then return when it started and ended,
    and the message."""
    started = time.time()
    if sleep_s:
        await asyncio.sleep(sleep_s)
    return [started, time.time(), message]


class WorkerSettings:
    """What `arq bench_tasks_arq.WorkerSettings` runs: one process, arq's default of up to
    10 jobs at once; results kept for the run."""

    functions = [echo]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    job_serializer = staticmethod(serialize)
    job_deserializer = staticmethod(deserialize)
    keep_result = 3600
    max_tries = 1
