"""One poller of the store's event feed per app, shared by every live event stream.

Without it, each open `GET /v1/events` would query the store many times a second. The
broadcaster asks for the events after the last one it has every POLL_S (an index range,
empty when nothing happened, read over a read-only connection of its own, so it never
waits for a writer nor makes one wait), reads the feed in order (waiting at gaps, see
bystroq.records.feeds.Follower), keeps the newest events in memory, and wakes the
streams; a stream that starts (or resumes) further back than memory reaches reads the
store until it catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from bystroq.records import feeds
from bystroq.records.sql import SQLStore

# Between two looks at the feed: what an event waits at most, once the consumer stored it.
POLL_S = 0.025
GAP_WAIT_S = 2.0
PAGE = 200
KEPT = 10_000


class Broadcaster:
    """Follows the feed while streams listen; `head`: every event up to it is settled."""

    def __init__(self, store: Callable[[], SQLStore]) -> None:
        self._store = store
        self.head = -1  # not started
        self._kept: deque[feeds.FeedEvent] = deque()
        self._covered_from = 0  # memory holds every settled event after this id
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Start following (once, however many streams start together), from the newest
        event."""
        async with self._starting:
            if self._task is not None:
                return
            self.head = self._covered_from = await run_in_threadpool(
                lambda: feeds.last_event_id(self._store()))
            self._task = asyncio.create_task(
                self._follow(feeds.Follower(self.head, GAP_WAIT_S)))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, follower: feeds.Follower) -> None:
        while True:
            try:
                page = await run_in_threadpool(lambda: feeds.events_after(
                    self._store(), follower.after, limit=PAGE))
            except Exception:  # the store is away: streams wait, nothing is skipped
                await asyncio.sleep(POLL_S)
                continue
            ready = follower.take(page)
            if ready:
                self._kept.extend(ready)
                while len(self._kept) > KEPT:
                    self._covered_from = self._kept.popleft().id
            if follower.after != self.head:
                self.head = follower.after
                self._changed.set()
                self._changed = asyncio.Event()
            if len(page) < PAGE or not ready:
                await asyncio.sleep(POLL_S)

    async def wait(self, timeout_s: float) -> None:
        """Until the head moves, or `timeout_s` passed."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def after(self, after: int) -> list[feeds.FeedEvent]:
        """Settled events after `after` (up to the head): from memory when it reaches that
        far back, else a page from the store."""
        head = self.head
        if after >= head:
            return []
        if after >= self._covered_from:
            return [e for e in self._kept if after < e.id <= head]
        page = await run_in_threadpool(
            lambda: feeds.events_after(self._store(), after, limit=PAGE))
        return [e for e in page if e.id <= head]
