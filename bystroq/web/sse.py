"""`GET /v1/events`: the events the consumer applied, as server-sent events.

Fed from the store's event log (never by reserving from an events tube, which would take
the events from the consumer): each event is sent with its feed id as the SSE `id`, so a
client that reconnects with `Last-Event-ID` (or `?after=`) gets everything after it. The
store is polled off the event loop.

PostgreSQL numbers events as they are inserted, and a transaction that took a lower
number may commit after one that took a higher: a reader that sees a gap in the numbers
waits for it to fill, up to GAP_WAIT_S (a gap left by an insert that was rolled back or
skipped as a duplicate never fills).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from bystroq.messages import key_to_submission_id
from bystroq.records import feeds
from bystroq.records.views import View
from bystroq.web.problems import Problem, ProblemRoute
from bystroq.web.services import Services

POLL_S = 0.2
GAP_WAIT_S = 2.0
KEEPALIVE_S = 15.0
PAGE = 200


class EventView(View, frozen=True):
    """One applied event: the submission it is about and the event as on the wire."""

    id: int
    submission_id: str | int = msgspec.field(name="submissionID")
    category: str
    event: str
    at: float
    attempt: int | None
    seq: int | None
    applied: bool
    message: dict[str, object]


_ENCODE = msgspec.json.Encoder().encode


def format_event(event: feeds.FeedEvent) -> bytes:
    view = EventView(id=event.id, submission_id=key_to_submission_id(event.submission_id),
                     category=event.category, event=event.event, at=event.at,
                     attempt=event.attempt, seq=event.seq, applied=event.applied,
                     message=event.body)
    return (f"id: {event.id}\nevent: {event.event}\ndata: ".encode() + _ENCODE(view)
            + b"\n\n")


class Follower:
    """Reads the feed in order, holding back at a gap until it fills or ages out."""

    def __init__(self, after: int) -> None:
        self.after = after
        self._gap_since: float | None = None

    def take(self, events: list[feeds.FeedEvent]) -> list[feeds.FeedEvent]:
        """The events (of an unfiltered page) that may be sent now, in order."""
        out = []
        for event in events:
            if event.id != self.after + 1:
                now = time.monotonic()
                self._gap_since = self._gap_since or now
                if now - self._gap_since < GAP_WAIT_S:
                    break
            self._gap_since = None
            out.append(event)
            self.after = event.id
        return out


def router(services: Services) -> APIRouter:
    events = APIRouter(route_class=ProblemRoute, tags=["events"])

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
            start = await run_in_threadpool(feeds.last_event_id, services.store)
        follower = Follower(start)

        async def body() -> AsyncIterator[bytes]:
            yield b": bystroq events\nretry: 1000\n\n"
            quiet_since = time.monotonic()
            while True:
                # Unfiltered, so that a gap in the ids is seen; filtered here.
                page = await run_in_threadpool(
                    feeds.events_after, services.store, follower.after, limit=PAGE)
                ready = follower.take(page)
                for event in ready:
                    if ((name is None or event.category == name)
                            and (submission is None or event.submission_id == submission)
                            and (batch is None or event.batch == batch)):
                        yield format_event(event)
                if ready:
                    quiet_since = time.monotonic()
                    if len(page) == PAGE:
                        continue
                if not follow and len(ready) == len(page):
                    return
                if await request.is_disconnected():
                    return
                if time.monotonic() - quiet_since > KEEPALIVE_S:
                    yield b": keepalive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(POLL_S)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    return events
