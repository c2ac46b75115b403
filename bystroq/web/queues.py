"""`/v1/queues`: tube counts per server, pause and resume, kick, purge, and the buried
jobs (dead letters): list them with their bodies, kick or delete one or all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import greenstalk
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from bystroq.ops import servers
from bystroq.ops.servers import Peeked, TubeStats, Unreachable, configured_tubes, tube_name
from bystroq.records.views import (
    CountView,
    PeekedJobView,
    ServerErrorView,
    StatsView,
    TubeStatsView,
)
from bystroq.servers import Server, servers_of
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


def _by_server(services: Services, tube: str,
               action: Callable[[Server, greenstalk.Client[bytes]], int]) -> Response:
    names = [s.name for s in servers_of(services.config.addresses)]
    rows = servers.on_each_server(services.config, tube, action)
    return json_response(_counts(dict(zip(names, rows, strict=True))))


def router(services: Services) -> APIRouter:
    queues = APIRouter(prefix="/queues", route_class=ProblemRoute, tags=["queues"])
    config = services.config

    def tube_of(name: str) -> str:
        tube = tube_name(config, name)
        if tube not in configured_tubes(config):
            raise Problem(404, f"no configured category or tube named {name!r}")
        return tube

    def one_server(tube: str, server: str,
                   action: Callable[[greenstalk.Client[bytes]], int]) -> Response:
        def on(s: Server, client: greenstalk.Client[bytes]) -> CountView | None:
            if s.name != server:
                return None
            try:
                return CountView(server=s.name, count=action(client))
            except greenstalk.NotFoundError:
                raise Problem(404, f"no such buried job on {server}") from None

        if server not in [f"{h}:{p}" for h, p in config.addresses]:
            raise Problem(404, f"no configured server {server!r}")
        rows = [r for r in servers.on_each_server(config, tube, on) if r is not None]
        return json_response([CountView(server=r.server, count=None, error=r.error)
                              if isinstance(r, Unreachable) else r for r in rows])

    @queues.get("", summary="Jobs per server and tube")
    def stats() -> Response:
        rows = servers.tube_stats(config)
        return json_response(StatsView(
            tubes=[TubeStatsView(server=r.server, tube=r.tube, ready=r.ready,
                                 reserved=r.reserved, delayed=r.delayed, buried=r.buried,
                                 watching=r.watching, total=r.total)
                   for r in rows if isinstance(r, TubeStats)],
            unreachable=[ServerErrorView(server=r.server, error=r.error)
                         for r in rows if isinstance(r, Unreachable)]))

    @queues.post("/{tube}/pause", summary="Pause a tube for a while (no job is reserved)")
    def pause(tube: str, body: PauseRequest) -> Response:
        name = tube_of(tube)
        return _by_server(services, name, lambda s, c: _pause(c, name, body.seconds))

    @queues.post("/{tube}/resume", summary="Resume a paused tube")
    def resume(tube: str) -> Response:
        name = tube_of(tube)
        return _by_server(services, name, lambda s, c: _pause(c, name, 0))

    @queues.post("/{tube}/kick", summary="Move buried (else delayed) jobs back to ready")
    def kick(tube: str, body: KickRequest) -> Response:
        return json_response(_counts(servers.kick(config, tube_of(tube), body.bound)))

    @queues.post("/{tube}/purge", summary="Delete every ready, delayed and buried job")
    def purge(tube: str, body: PurgeRequest) -> Response:
        name = tube_of(tube)
        if body.confirm != name:
            raise Problem(422, f"to purge, send {{\"confirm\": \"{name}\"}}")
        return _by_server(services, name, _purge)

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
        return one_server(tube_of(tube), server, lambda c: _kick_job(c, queue_id))

    @queues.delete("/{tube}/buried/{server}/{queue_id}", summary="Delete one buried job")
    def delete_one(tube: str, server: str, queue_id: int) -> Response:
        return one_server(tube_of(tube), server, lambda c: _delete_buried_job(c, queue_id))

    return queues


def _peeked(job: Peeked, count: int) -> PeekedJobView:
    return PeekedJobView(server=job.server, queue_id=job.job_id, reserves=job.reserves,
                         age_s=job.age_s, body=job.body.decode(errors="replace"),
                         buried=count)


def _pause(client: greenstalk.Client[bytes], tube: str, seconds: int) -> int:
    try:
        client.pause_tube(tube, seconds)
    except greenstalk.NotFoundError:
        return 0  # no job and no watcher: nothing to pause
    return 1


def _purge(server: Server, client: greenstalk.Client[bytes]) -> int:
    count = 0
    for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
        while True:
            try:
                client.delete(peek())
            except greenstalk.NotFoundError:
                break
            count += 1
    return count


def _kick_job(client: greenstalk.Client[bytes], queue_id: int) -> int:
    if client.stats_job(queue_id)["state"] != "buried":
        raise greenstalk.NotFoundError()
    client.kick_job(queue_id)
    return 1


def _delete_buried_job(client: greenstalk.Client[bytes], queue_id: int) -> int:
    if client.stats_job(queue_id)["state"] != "buried":
        raise greenstalk.NotFoundError()
    client.delete(queue_id)
    return 1
