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
from starlette.routing import Mount

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
# Route labels beyond this many count as OTHER.
MAX_ROUTES = 200
OTHER = "other"
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
        self._routes: set[str] = set()

    def _label(self, template: str) -> str:
        """The template, while fewer than MAX_ROUTES were seen (a safety net: an app
        mounted under a path with parameters in it must not make a series per value)."""
        if template in self._routes:
            return template
        if len(self._routes) >= MAX_ROUTES:
            return OTHER
        self._routes.add(template)
        return template

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
            route = self._label(route_template(scope))
            self.requests.labels(route, method, str(status)).inc()
            self.duration.labels(route, method).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The template of the route that took the request (`/v1/batches/{batch_id}`).

    The route matched may be the one declared in an included router, whose path lacks
    the prefixes it was included under: those are the request path's leading segments."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    if isinstance(route, Mount):
        return template.rstrip("/") + "/{path}"
    tail = [part for part in template.split("/") if part]
    raw = scope.get("raw_path")  # still percent-encoded: an id's %2F stays in its segment
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", ""))
    parts = [part for part in path.split("?")[0].split("/") if part]
    head = parts[:max(0, len(parts) - len(tail))]
    return "/" + "/".join(head + tail)


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
