"""`/healthz` (the process answers) and `/readyz` (the servers and the store answer)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bystroq.ops.health import ServerUp, server_health
from bystroq.records import feeds
from bystroq.web.problems import ProblemRoute
from bystroq.web.responses import json_response
from bystroq.web.schema import HealthView, ReadyView, ServerHealthView
from bystroq.web.services import Services


def router(services: Services) -> APIRouter:
    health = APIRouter(route_class=ProblemRoute, tags=["health"])

    @health.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        return json_response(HealthView(ok=True))

    @health.get("/readyz", summary="Every beanstalkd server and the records store answer")
    def readyz() -> Response:
        servers = [ServerHealthView(server=r.server, ok=isinstance(r, ServerUp),
                                    error=None if isinstance(r, ServerUp) else r.error)
                   for r in server_health(services.config)]
        store_error = None
        try:
            feeds.last_event_id(services.store)
        except Exception as exc:
            store_error = (str(exc) or type(exc).__name__).splitlines()[0]
        ready = store_error is None and all(s.ok for s in servers)
        return json_response(ReadyView(ready=ready, servers=servers, store=store_error is None,
                                       store_error=store_error), 200 if ready else 503)

    return health
