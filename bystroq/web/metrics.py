"""`/metrics` of the HTTP API: requests by route template, method and status; beanstalkd
and the records store read at scrape time; the build; and whatever else shares the registry
(an IdleWorker given the same registry adds its worker's metrics).

`create_app` does all of it; in your own app:

    registry = CollectorRegistry()
    install_request_metrics(app, registry)
    app.include_router(create_router(config, metrics=registry))   # serves /metrics

`/metrics` takes the same bearer tokens as the API's GETs (a read token is enough); without
tokens it is open, like the rest of the API (which then binds loopback only).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from bystroq.metrics.beanstalkd import BeanstalkdCollector
from bystroq.metrics.build import register_build_info
from bystroq.metrics.store import StoreCollector
from bystroq.web.auth import authorizer
from bystroq.web.problems import ProblemRoute
from bystroq.web.services import Services

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A request no route matched (a 404 for any path) counts under this one route label.
UNMATCHED = "unmatched"
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def install_request_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """Count `app`'s requests into `registry` (by route template, method and status)."""
    app.add_middleware(RequestMetrics, registry=registry)


class RequestMetrics:
    """ASGI middleware: `bystroq_http_requests_total` and the request duration histogram.
    The route is the matched route's template (`/v1/submissions/{submission_id}`), never
    the raw path, so ids do not become label values."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "bystroq_http_requests", "HTTP API requests by route template, method and status",
            ["route", "method", "status"], registry=registry)
        self.duration = Histogram(
            "bystroq_http_request_duration_seconds", "HTTP API request duration (to the end "
            "of the response)", ["route", "method"], buckets=DURATION_BUCKETS_S,
            registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.requests.labels(route, method, str(status)).inc()
            self.duration.labels(route, method).observe(time.perf_counter() - started)


def metrics_router(services: Services, registry: CollectorRegistry) -> APIRouter:
    """`GET /metrics` over `registry`, to which beanstalkd, the records store and the
    build info are added (read at each scrape)."""
    registry.register(BeanstalkdCollector(services.config))
    registry.register(StoreCollector(lambda: services.store))
    register_build_info(registry)
    router = APIRouter(route_class=ProblemRoute, tags=["metrics"],
                       dependencies=[Depends(authorizer(services.settings))])

    @router.get("/metrics", summary="Prometheus metrics (text exposition format)",
                response_class=Response)
    def metrics() -> Response:  # in the thread pool: the scrape asks servers and store
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
