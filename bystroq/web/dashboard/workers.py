"""The dashboard's Workers page: the live workers (from their heartbeats, kept by the
consumer), what each runs now and when it was last heard from; quiet or stop one."""

# Annotations are evaluated at definition (no `from __future__ import annotations`):
# FastAPI reads the handlers' annotations, which name aliases local to `routes`.

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from bystroq.errors import BystroqError
from bystroq.ops.workers import WorkerAction, ask_worker, list_workers
from bystroq.web.dashboard.access import Viewer, audit, read_form, viewer_of, writer_of
from bystroq.web.dashboard.actions import back
from bystroq.web.dashboard.render import Pages
from bystroq.web.problems import Problem, ProblemRoute
from bystroq.web.services import Services

ACTIONS = {"quiet": WorkerAction.QUIET, "stop": WorkerAction.STOP}


def routes(services: Services, pages: Pages) -> APIRouter:
    router = APIRouter(route_class=ProblemRoute)
    Who = Annotated[Viewer, Depends(viewer_of(services))]
    Writer = Annotated[Viewer, Depends(writer_of(services))]

    @router.get("/workers", name="dashboard_workers", response_class=HTMLResponse)
    def workers(request: Request, who: Who, all: bool = False) -> HTMLResponse:
        return pages.render(request, "workers.html", who, "Workers", show_all=all,
                            items=list_workers(services.store, include_gone=all))

    @router.post("/actions/worker", name="dashboard_worker_action")
    async def worker_action(request: Request, who: Writer) -> Response:
        form = await read_form(request)
        worker_id, op = form.get("worker", ""), form.get("op", "")
        if op not in ACTIONS:
            raise Problem(422, f"unknown worker action {op!r}; expected quiet or stop")

        def run() -> str:
            try:
                ask_worker(services.config, services.store, worker_id, ACTIONS[op],
                           reason=f"{op} by {who.name} (dashboard)")
                note = f"{worker_id}: asked to {op}"
            except BystroqError as exc:
                note = str(exc)
            audit(services, who, f"worker.{op}", worker_id, "", note)
            return note

        return back(request, "dashboard_workers", await run_in_threadpool(run))

    return router
