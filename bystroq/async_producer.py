"""`AsyncProducer`: submitting from asyncio code (a FastAPI endpoint) without ever
blocking the event loop.

Each submit runs the thread-safe Producer in a small thread pool of its own (not the
loop's default executor, which the app may need for other blocking work), so a slow or
unreachable server delays the awaiting caller only. `submit_many` puts a whole list in
one trip to the pool, in order.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from bystroq.config import LoadedConfig
from bystroq.producer import (
    DEFAULT_PRIORITY,
    DEFAULT_WAIT_S,
    FROM_CONFIG,
    FromConfig,
    Producer,
    SubmitRecorder,
    Submitted,
)

Job = msgspec.Struct | Mapping[str, Any] | bytes


class AsyncProducer:
    """Submits jobs from coroutines; same guarantees and errors as Producer.submit."""

    def __init__(self, config: LoadedConfig, *, wait_s: float = DEFAULT_WAIT_S,
                 recorder: SubmitRecorder | FromConfig | None = FROM_CONFIG,
                 threads: int = 2) -> None:
        self.producer = Producer(config, wait_s=wait_s, recorder=recorder)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="bystroq-submit")

    async def submit(self, category: str, job: Job, *, priority: int = DEFAULT_PRIORITY,
                     delay: int = 0, ttr: int | None = None,
                     batch: str | None = None) -> Submitted:
        """Put one job on `category`'s submission tube; where it went."""
        call = functools.partial(self.producer.submit, category, job, priority=priority,
                                 delay=delay, ttr=ttr, batch=batch)
        # In the caller's context: its current trace span goes with the job.
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, contextvars.copy_context().run, call)

    async def submit_many(self, category: str, jobs: Sequence[Job], *,
                          priority: int = DEFAULT_PRIORITY, delay: int = 0,
                          ttr: int | None = None,
                          batch: str | None = None) -> list[Submitted]:
        """Put jobs in order; an error is raised after the jobs before it were put (the
        exception's `submitted` attribute lists them)."""
        def put_all() -> list[Submitted]:
            done: list[Submitted] = []
            for job in jobs:
                try:
                    done.append(self.producer.submit(category, job, priority=priority,
                                                     delay=delay, ttr=ttr, batch=batch))
                except Exception as exc:
                    exc.submitted = done  # type: ignore[attr-defined]
                    raise
            return done

        return await asyncio.get_running_loop().run_in_executor(
            self._pool, contextvars.copy_context().run, put_all)

    async def aclose(self) -> None:
        """Wait for submits in flight, then close the connections."""
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._pool.shutdown(wait=True)
        self.producer.close()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
