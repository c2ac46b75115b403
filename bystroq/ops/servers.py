"""Looking at the servers and acting on their tubes: counts, peek, kick, buried jobs,
reading events. Every function goes on past a server that is down (an `Unreachable` row)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import greenstalk
import msgspec

from bystroq.config import LoadedConfig, did_you_mean
from bystroq.errors import UnknownCategory
from bystroq.servers import CONNECTION_ERRORS, Connection, Server, servers_of

T = TypeVar("T")


@dataclass(frozen=True)
class TubeStats:
    """Counts for one tube on one server."""

    server: str
    tube: str
    ready: int
    reserved: int
    delayed: int
    buried: int
    watching: int
    total: int
    urgent: int = 0  # ready jobs with priority < 1024
    waiting: int = 0  # connections waiting in a reserve that watches the tube
    paused: bool = False
    pause_left_s: int = 0  # seconds the tube stays paused (0: not paused)


@dataclass(frozen=True)
class Unreachable:
    """A server that did not answer (the row stands in for its results)."""

    server: str
    error: str


def tube_name(config: LoadedConfig, name: str, events: bool = False) -> str:
    """A category name stands for its submission (or events) tube; a configured tube's
    name is itself; any other name is an UnknownCategory error with a suggestion."""
    tubes = config.config.beanstalkd.tubes
    if name in tubes:
        return tubes[name].events if events else tubes[name].submission
    known = config.tube_names()
    if name in known:
        return name
    raise UnknownCategory(
        f"{config.source}: no category or tube named {name!r} under beanstalkd.tubes"
        f"{did_you_mean(name, known)}; known: {', '.join(known) or '(none)'}")


def tube_stats(
    config: LoadedConfig, tubes: Sequence[str] | None = None
) -> list[TubeStats | Unreachable]:
    """Counts per server for `tubes` (default: every configured submission and events tube)."""
    names = [tube_name(config, t) for t in tubes] if tubes else configured_tubes(config)
    rows: list[TubeStats | Unreachable] = []
    for server in servers_of(config.addresses):
        conn = Connection(server)
        try:
            client = conn.client
            for tube in names:
                try:
                    s = client.stats_tube(tube)
                except greenstalk.NotFoundError:
                    rows.append(TubeStats(server.name, tube, 0, 0, 0, 0, 0, 0))
                    continue
                rows.append(TubeStats(
                    server.name, tube, int(s["current-jobs-ready"]),
                    int(s["current-jobs-reserved"]), int(s["current-jobs-delayed"]),
                    int(s["current-jobs-buried"]), int(s["current-watching"]),
                    int(s["total-jobs"]), int(s["current-jobs-urgent"]),
                    int(s["current-waiting"]), int(s["pause"]) > 0,
                    int(s["pause-time-left"]),
                ))
        except CONNECTION_ERRORS as exc:
            rows.append(Unreachable(server.name, str(exc) or type(exc).__name__))
        finally:
            conn.close()
    return rows


def configured_tubes(config: LoadedConfig) -> list[str]:
    tubes: list[str] = []
    for conf in config.config.beanstalkd.tubes.values():
        tubes += [conf.submission, conf.events]
    return tubes


@dataclass(frozen=True)
class Peeked:
    server: str
    job_id: int
    body: bytes
    reserves: int
    age_s: int


def peek(config: LoadedConfig, tube: str, state: str) -> list[Peeked | Unreachable]:
    """The next job in `state` (ready, delayed or buried) of `tube`, on each server."""
    def one(server: Server, client: greenstalk.Client[bytes]) -> Peeked | None:
        try:
            job = {"ready": client.peek_ready, "delayed": client.peek_delayed,
                   "buried": client.peek_buried}[state]()
            stats = client.stats_job(job)
        except greenstalk.NotFoundError:
            return None
        return Peeked(server.name, job.id, job.body, int(stats["reserves"]),
                      int(stats["age"]))

    return [row for row in on_each_server(config, tube, one) if row is not None]


def kick(config: LoadedConfig, tube: str, bound: int) -> dict[str, int | Unreachable]:
    """Move up to `bound` buried (else delayed) jobs of `tube` to ready, on each server."""
    return _by_server(config, tube, lambda server, client: int(client.kick(bound)))


def on_each_server(
    config: LoadedConfig, tube: str, action: Callable[[Server, greenstalk.Client[bytes]], T]
) -> list[T | Unreachable]:
    """`action` over a client using `tube`, on each server; an unreachable server is a
    Unreachable row, and the servers after it are still served."""
    rows: list[T | Unreachable] = []
    for server in servers_of(config.addresses):
        conn = Connection(server, use=tube)
        try:
            rows.append(action(server, conn.client))
        except CONNECTION_ERRORS as exc:
            rows.append(Unreachable(server.name, str(exc) or type(exc).__name__))
        finally:
            conn.close()
    return rows


def _by_server(
    config: LoadedConfig, tube: str, action: Callable[[Server, greenstalk.Client[bytes]], int]
) -> dict[str, int | Unreachable]:
    names = [s.name for s in servers_of(config.addresses)]
    return dict(zip(names, on_each_server(config, tube, action), strict=True))


def follow_events(
    config: LoadedConfig, tube: str, follow: bool, poll_s: float = 0.05
) -> Iterator[tuple[Server, dict[str, object] | bytes]]:
    """Events from `tube` on every server, consumed (deleted) as they are read.

    Without `follow`, stops when no server has one ready.
    """
    conns = [Connection(s, watch=[tube]) for s in servers_of(config.addresses)]
    try:
        while True:
            got = False
            for conn in conns:
                if not conn.ready():
                    continue
                try:
                    job = conn.client.reserve(0)
                except greenstalk.TimedOutError:
                    continue
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)
                    continue
                got = True
                try:
                    event: dict[str, object] | bytes = msgspec.json.decode(job.body)
                except msgspec.DecodeError:
                    event = job.body
                yield conn.server, event
                conn.client.delete(job)
            if not got:
                if not follow:
                    return
                time.sleep(poll_s)
    finally:
        for conn in conns:
            conn.close()


def buried_jobs(config: LoadedConfig, tube: str) -> list[tuple[Peeked, int] | Unreachable]:
    """Per server: the oldest buried job of `tube` and how many are buried there.

    (beanstalkd shows only the oldest buried job; delete or kick it to see the next.)
    """
    counts = {row.server: row.buried for row in tube_stats(config, [tube])
              if isinstance(row, TubeStats)}
    return [(job, counts.get(job.server, 0)) if isinstance(job, Peeked) else job
            for job in peek(config, tube, "buried")]


def delete_buried(config: LoadedConfig, tube: str) -> dict[str, int | Unreachable]:
    """Delete every buried job of `tube`, on each server."""
    def delete_all(server: Server, client: greenstalk.Client[bytes]) -> int:
        count = 0
        while True:
            try:
                client.delete(client.peek_buried())
            except greenstalk.NotFoundError:
                return count
            count += 1

    return _by_server(config, tube, delete_all)
