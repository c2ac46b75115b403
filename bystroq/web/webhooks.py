"""Webhooks in the web process: delivered by a thread started with the router's lifespan
(bystroq.ops.hooks does the work), and `/v1/webhooks` to see how far each got and every
delivery attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Response
from starlette.concurrency import run_in_threadpool

from bystroq.ops.hooks import Hook, HookRunner, Webhook
from bystroq.records import feeds
from bystroq.records.batchstore import Store
from bystroq.records.store import open_store
from bystroq.records.views import View
from bystroq.web.problems import ProblemRoute
from bystroq.web.responses import json_response
from bystroq.web.services import Services


class WebhookView(View, frozen=True):
    url: str
    categories: list[str]
    delivered_up_to: int | None  # the feed id of the last event delivered


class DeliveryView(View, frozen=True):
    url: str
    event_id: int
    attempt: int
    status: int | None
    error: str | None
    at: float


def hook_name(url: str) -> str:
    return f"webhook:{url}"


def router(services: Services) -> APIRouter:
    webhooks = services.settings.webhooks
    state: dict[str, tuple[Store, HookRunner]] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if webhooks:
            def start() -> tuple[Store, HookRunner]:
                store = open_store(services.settings.records_url)
                hooks = [Hook(store, hook_name(w.url), Webhook(store, w.url, w.secret),
                              categories=w.categories) for w in webhooks]
                return store, HookRunner(hooks).start()

            state["running"] = await run_in_threadpool(start)
        try:
            yield
        finally:
            if "running" in state:
                store, runner = state.pop("running")
                await run_in_threadpool(runner.close)
                await run_in_threadpool(store.close)

    routes = APIRouter(prefix="/webhooks", route_class=ProblemRoute, tags=["webhooks"],
                       lifespan=lifespan)

    @routes.get("", summary="Configured webhooks and how far each got")
    def list_webhooks() -> Response:
        return json_response([WebhookView(
            url=w.url, categories=list(w.categories),
            delivered_up_to=feeds.hook_cursor(services.store, hook_name(w.url)))
            for w in webhooks])

    @routes.get("/deliveries", summary="Delivery attempts, newest first")
    def deliveries(url: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        return json_response([DeliveryView(url=d.url, event_id=d.event_id, attempt=d.attempt,
                                           status=d.status, error=d.error, at=d.at)
                              for d in feeds.deliveries(services.store, url, limit)])

    return routes
