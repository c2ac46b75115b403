"""`GET /v1/events`: the events the consumer applied, as server-sent events.

Fed from the store's event log (never by reserving from an events tube, which would take
the events from the consumer): each event is sent with its feed id as the SSE `id`, so a
client that reconnects with `Last-Event-ID` (or `?after=`) gets everything after it. Live
streams share one poller of the store (bystroq.web.broadcast), off the event loop;
`follow=false` reads what is there and ends.

PostgreSQL numbers events as they are inserted, and a transaction that took a lower
number may commit after one that took a higher: a reader that sees a gap in the numbers
waits for it to fill, up to GAP_WAIT_S (a gap left by an insert that was rolled back or
skipped as a duplicate never fills).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import msgspec
from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from bystroq.ops.hooks import event_view
from bystroq.records import feeds
from bystroq.web.broadcast import GAP_WAIT_S, PAGE, POLL_S, Broadcaster
from bystroq.web.problems import Problem, ProblemRoute
from bystroq.web.services import Services

KEEPALIVE_S = 15.0
KEEPALIVE_CHECK_S = 1.0  # an idle stream looks for a gone client this often


_ENCODE = msgspec.json.Encoder().encode


def format_event(event: feeds.FeedEvent) -> bytes:
    view = event_view(event)
    return (f"id: {event.id}\nevent: {event.event}\ndata: ".encode() + _ENCODE(view)
            + b"\n\n")


def router(services: Services) -> APIRouter:
    broadcaster = Broadcaster(lambda: services.feed_store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await broadcaster.close()

    events = APIRouter(route_class=ProblemRoute, tags=["events"], lifespan=lifespan)

    @events.get("/events", summary="Applied events as server-sent events (text/event-stream)",
                response_class=StreamingResponse)
    async def stream(
        request: Request,
        category: str | None = None,
        submission: Annotated[str | None, Query(description="one submission's events")] = None,
        batch: str | None = None,
        after: Annotated[int | None, Query(ge=0, description="start after this id")] = None,
        last_event_id: Annotated[str | None, Header()] = None,
        follow: Annotated[bool, Query(description="keep the stream open")] = True,
    ) -> StreamingResponse:
        name = None
        if category is not None:
            try:
                name = services.config.resolve(category).name
            except Exception:
                raise Problem(404, f"no category {category!r}") from None
        start = after
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise Problem(400, "Last-Event-ID must be an id this stream sent")
            start = int(last_event_id)
        if start is None:
            start = await run_in_threadpool(lambda: feeds.last_event_id(services.feed_store))

        async def settled() -> AsyncIterator[bytes]:
            """Every event up to now, read from the store, then the end."""
            follower = feeds.Follower(start, GAP_WAIT_S)
            while True:
                page = await run_in_threadpool(lambda: feeds.events_after(
                    services.feed_store, follower.after, limit=PAGE))
                ready = follower.take(page)
                for event in ready:
                    if wanted(event):
                        yield format_event(event)
                if len(ready) == len(page) < PAGE:
                    return
                if len(ready) < len(page):
                    await asyncio.sleep(POLL_S)  # a gap: wait for it to fill

        async def live() -> AsyncIterator[bytes]:
            """Events as the shared broadcaster settles them, until the client leaves."""
            await broadcaster.start()
            position = start
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                events = await broadcaster.after(position)
                for event in events:
                    if wanted(event):
                        yield format_event(event)
                        quiet_since = time.monotonic()
                    position = event.id
                if events:
                    continue
                if time.monotonic() - quiet_since > KEEPALIVE_S:
                    yield b": keepalive\n\n"
                    quiet_since = time.monotonic()
                await broadcaster.wait(KEEPALIVE_CHECK_S)

        def wanted(event: feeds.FeedEvent) -> bool:
            return ((name is None or event.category == name)
                    and (submission is None or event.submission_id == submission)
                    and (batch is None or event.batch == batch))

        async def body() -> AsyncIterator[bytes]:
            yield b": bystroq events\nretry: 1000\n\n"
            async for chunk in (live() if follow else settled()):
                yield chunk

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    return events
