"""Blocking calls from coroutines, run one after another on a thread of their own.

For the records store, which has one connection behind a lock: calls from the thread pool
would mostly wait for each other on that lock (and a thread each to wake up). Here the
calls made while a batch runs go together as the next batch, one trip to the thread for
many; each caller gets its own result or exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class SerialCalls:
    """Runs blocking calls in order on one thread (started on first use, again after
    close)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending: list[_Call] = []
        self._drain: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.batches = 0  # trips to the thread so far

    async def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on the thread; its result, or what it raised. Shielded: a caller that
        is cancelled does not stop a call that may be under way."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run_pending())
        return await asyncio.shield(future)

    async def _run_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)
            thread = self._thread
            batch, self._pending = self._pending, []
            self.batches += 1
            try:
                outcomes = await loop.run_in_executor(thread, _run_all, batch)
            except BaseException:  # the app is stopping
                for _, future in batch + self._pending:
                    future.cancel()
                self._pending = []
                raise
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
                    future.exception()  # marked as read: a caller that went away never does

    def close(self) -> None:
        """Wait for the batch under way, then stop the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)


def _run_all(batch: list[_Call]) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    for fn, _ in batch:
        try:
            outcomes.append((True, fn()))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes
