"""`/v1/queues`: tube counts per server, pause and resume, kick, purge, and the buried
jobs (dead letters): list them with their bodies, kick or delete one or all."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from bystroq.errors import UnknownCategory
from bystroq.ops import servers, tubes
from bystroq.ops.servers import Peeked, Unreachable, configured_tubes, tube_name
from bystroq.records.views import (
    CountView,
    PeekedJobView,
    ServerErrorView,
)
from bystroq.web.problems import Problem, ProblemRoute
from bystroq.web.responses import json_response
from bystroq.web.services import Services

MAX_PAUSE_S = 7 * 86_400


class PauseRequest(BaseModel):
    seconds: Annotated[int, Field(ge=1, le=MAX_PAUSE_S, description="how long to pause")]


class KickRequest(BaseModel):
    bound: Annotated[int, Field(ge=1, le=1_000_000)] = 1000


class PurgeRequest(BaseModel):
    confirm: Annotated[str, Field(max_length=200,
                                  description="the tube's name, to confirm the purge")]


def _counts(counts: dict[str, int | Unreachable]) -> list[CountView]:
    return [CountView(server=s, count=None, error=c.error) if isinstance(c, Unreachable)
            else CountView(server=s, count=c) for s, c in counts.items()]


def router(services: Services) -> APIRouter:
    queues = APIRouter(prefix="/queues", route_class=ProblemRoute, tags=["queues"])
    config = services.config

    def tube_of(name: str) -> str:
        try:
            tube = tube_name(config, name)
        except UnknownCategory as exc:
            raise Problem(404, str(exc).split(": ", 1)[-1]) from None
        if tube not in configured_tubes(config):
            raise Problem(404, f"no configured category or tube named {name!r}")
        return tube

    def one_buried(tube: str, server: str, queue_id: int, delete: bool) -> Response:
        try:
            count = tubes.act_on_buried(config, tube, server, queue_id, delete)
        except KeyError:
            raise Problem(404, f"no configured server {server!r}") from None
        except tubes.NotBuried:
            raise Problem(404, f"job {queue_id} is not a buried job of {tube} on "
                          f"{server}") from None
        return json_response(_counts({server: count}))

    @queues.get("", summary="Jobs per server and tube")
    def stats() -> Response:
        rows = servers.tube_stats(config)
        return json_response(servers.stats_view(rows))

    @queues.post("/{tube}/pause", summary="Pause a tube for a while (no job is reserved)")
    def pause(tube: str, body: PauseRequest) -> Response:
        return json_response(_counts(tubes.pause(config, tube_of(tube), body.seconds)))

    @queues.post("/{tube}/resume", summary="Resume a paused tube")
    def resume(tube: str) -> Response:
        return json_response(_counts(tubes.pause(config, tube_of(tube), 0)))

    @queues.post("/{tube}/kick", summary="Move buried (else delayed) jobs back to ready")
    def kick(tube: str, body: KickRequest) -> Response:
        return json_response(_counts(servers.kick(config, tube_of(tube), body.bound)))

    @queues.post("/{tube}/purge", summary="Delete every ready, delayed and buried job")
    def purge(tube: str, body: PurgeRequest) -> Response:
        name = tube_of(tube)
        if body.confirm != name:
            raise Problem(422, f"to purge, send {{\"confirm\": \"{name}\"}}")
        return json_response(_counts(tubes.purge(config, name)))

    @queues.get("/{tube}/buried", summary="Buried jobs: the oldest on each server, its body")
    def buried(tube: str) -> Response:
        rows = servers.buried_jobs(config, tube_of(tube))
        return json_response([_peeked(*row) if isinstance(row, tuple) else
                              ServerErrorView(server=row.server, error=row.error)
                              for row in rows])

    @queues.post("/{tube}/buried/kick", summary="Kick every buried job back to ready")
    def kick_buried(tube: str) -> Response:
        return json_response(_counts(servers.kick(config, tube_of(tube), 2**31)))

    @queues.delete("/{tube}/buried", summary="Delete every buried job")
    def delete_buried(tube: str) -> Response:
        return json_response(_counts(servers.delete_buried(config, tube_of(tube))))

    @queues.post("/{tube}/buried/{server}/{queue_id}/kick", summary="Kick one buried job")
    def kick_one(tube: str, server: str, queue_id: int) -> Response:
        return one_buried(tube_of(tube), server, queue_id, delete=False)

    @queues.delete("/{tube}/buried/{server}/{queue_id}", summary="Delete one buried job")
    def delete_one(tube: str, server: str, queue_id: int) -> Response:
        return one_buried(tube_of(tube), server, queue_id, delete=True)

    return queues


def _peeked(job: Peeked, count: int) -> PeekedJobView:
    return PeekedJobView(server=job.server, queue_id=job.job_id, reserves=job.reserves,
                         age_s=job.age_s, body=job.body.decode(errors="replace"),
                         buried=count)
