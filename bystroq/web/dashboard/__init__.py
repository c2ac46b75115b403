"""The dashboard: server-rendered pages over the same services as the `/v1` API, at the
router's root (`/` under `bystroq serve`, or under the prefix a user mounts it at).

Pages are Jinja2 templates (templates/), with one script and one stylesheet of our own
(static/) that update progress and states in place from `/v1/events`. Everything reads
without JavaScript; actions are forms (see access.py for who may do what).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from bystroq.web.dashboard import actions, pages, tubes, workers
from bystroq.web.dashboard.bulk import BulkTasks
from bystroq.web.dashboard.render import Pages
from bystroq.web.problems import ProblemRoute
from bystroq.web.services import Services

STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def dashboard_router(services: Services) -> APIRouter:
    """The dashboard's routes; its lifespan stops bulk actions still running."""
    bulk = BulkTasks(services)
    rendering = Pages()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(bulk.close)

    router = APIRouter(lifespan=lifespan, include_in_schema=False, route_class=ProblemRoute)
    router.include_router(pages.routes(services, rendering))
    router.include_router(actions.routes(services, rendering))
    router.include_router(tubes.routes(services, rendering, bulk))
    router.include_router(workers.routes(services, rendering))
    files = {name: (resources.files(__package__) / "static" / name).read_bytes()
             for name in STATIC}

    @router.get("/static/{name}", name="dashboard_static")
    def static(name: str) -> Response:
        if name not in files:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(files[name], media_type=STATIC[name],
                        headers={"Cache-Control": "public, max-age=300"})

    return router
