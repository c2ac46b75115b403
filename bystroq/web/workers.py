"""`/v1/workers`: the live workers (from their heartbeats), one worker, and asking one to
quiet (stop taking jobs) or stop."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Response

from bystroq.errors import BystroqError, ServersUnavailable, UnknownCategory, UnknownWorker
from bystroq.ops.workers import WorkerAction, ask_worker, find_worker, list_workers
from bystroq.records.views import WorkerView
from bystroq.web.problems import Problem, ProblemRoute
from bystroq.web.responses import json_response
from bystroq.web.services import Services

# What a worker id can hold: the characters of a tube name (it names the control tube).
_WORKER_ID = re.compile(r"[A-Za-z0-9+;.$_()-]{1,200}")


def router(services: Services) -> APIRouter:
    workers = APIRouter(prefix="/workers", route_class=ProblemRoute, tags=["workers"])

    def found(worker_id: str) -> WorkerView:
        if not _WORKER_ID.fullmatch(worker_id):
            raise Problem(404, f"no worker {worker_id!r}: a worker id is a tube name")
        try:
            return find_worker(services.store, worker_id)
        except UnknownWorker as exc:
            raise Problem(404, str(exc)) from None

    def ask(worker_id: str, action: WorkerAction) -> Response:
        found(worker_id)
        try:
            view = ask_worker(services.config, services.store, worker_id, action)
        except ServersUnavailable as exc:
            raise Problem(503, str(exc), headers={"Retry-After": "5"}) from None
        except BystroqError as exc:
            raise Problem(409, str(exc)) from None
        return json_response(view, 202)

    @workers.get("", summary="Live workers (with `all`, also those stopped or gone)")
    def list_all(
        include_all: Annotated[bool, Query(alias="all",
                                           description="also workers stopped or silent")]
        = False,
        category: str | None = None,
    ) -> Response:
        name = None
        if category is not None:
            try:
                name = services.config.resolve(category).name
            except UnknownCategory as exc:
                raise Problem(404, str(exc)) from None
        return json_response(list_workers(services.store, include_gone=include_all, category=name))

    @workers.get("/{worker_id}", summary="One worker, alive or not")
    def one(worker_id: str) -> Response:
        return json_response(found(worker_id))

    @workers.post("/{worker_id}/quiet", status_code=202,
                  summary="Stop taking jobs; running jobs finish; the worker stays")
    def quiet(worker_id: str) -> Response:
        return ask(worker_id, WorkerAction.QUIET)

    @workers.post("/{worker_id}/stop", status_code=202,
                  summary="Stop as on SIGTERM: running jobs finish, then the worker exits")
    def stop(worker_id: str) -> Response:
        return ask(worker_id, WorkerAction.STOP)

    return workers
