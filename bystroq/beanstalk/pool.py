"""One connection per server, and the pipelined commands the hot paths use over one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import greenstalk

from bystroq.beanstalk import framing
from bystroq.beanstalk.connection import Connection
from bystroq.beanstalk.framing import Reply
from bystroq.beanstalk.health import Server, ServerHealth
from bystroq.errors import NotBeanstalkd, ServersUnavailable


def connections(
    servers: Sequence[Server], *, use: str = "default", watch: Sequence[str] = (),
    health: ServerHealth | None = None,
) -> list[Connection]:
    """One (not yet connected) connection per server."""
    health = health or ServerHealth()
    return [Connection(server, use=use, watch=tuple(watch), health=health)
            for server in servers]


def wait_for_any(conns: Sequence[Connection], deadline: float) -> None:
    """Sleep until one connection's backoff ends, or until `deadline`; raise if past it."""
    now = time.monotonic()
    if now >= deadline:
        names = ", ".join(c.address.name for c in conns)
        why = "; ".join(dict.fromkeys(c.last_error for c in conns if c.last_error))
        if all(isinstance(c.last_failure, NotBeanstalkd) for c in conns):
            raise ServersUnavailable(f"no beanstalkd server at {names}: {why}")
        raise ServersUnavailable(
            f"no beanstalkd server answered ({names}){': ' + why if why else ''}; start one "
            f"(e.g. `beanstalkd -l 127.0.0.1 -p 11300`) or fix beanstalkd.addresses in the "
            f"config"
        )
    soonest = min(c.retry_at for c in conns)
    time.sleep(max(0.01, min(deadline, soonest) - now))


def delete_then_reserve(
    conn: Connection, job_id: int, timeout: int
) -> tuple[bool, greenstalk.Job[bytes] | None]:
    """`delete job_id` and `reserve-with-timeout` in one write: one round trip, not two.

    Returns whether the delete found the job, and the reserved job (None on time-out).
    """
    deleted, reserved = exchange(conn, [framing.delete(job_id), framing.reserve(timeout)])
    return framing.expect(deleted, b"DELETED"), framing.reserved_job(reserved)


class JobStats(NamedTuple):
    """What a worker reads of a job's `stats-job`."""

    reserves: int
    ttr: int
    pri: int
    age: int  # whole seconds since the job was put
    deleted: bool  # whether `delete_first` found its job


def job_reserves_ttr_pri(
    conn: Connection, job_id: int, delete_first: int | None = None
) -> JobStats:
    """`stats-job`, reading only `reserves`, `ttr`, `pri` and `age` (the full YAML parse
    costs more than the round trip on the hot path); `delete_first` (a job whose completed
    event is stored) is deleted in the same round trip."""
    commands = [framing.stats_job(job_id)]
    if delete_first is not None:
        commands.insert(0, framing.delete(delete_first))
    replies = exchange(conn, commands)
    deleted = delete_first is not None and replies[0].status == b"DELETED"
    status, values, stats = replies[-1]
    if status == b"NOT_FOUND":
        raise greenstalk.NotFoundError([])
    if status != b"OK" or stats is None:
        raise greenstalk.UnknownResponseError(status, values)
    return JobStats(framing.stat(stats, b"reserves"), framing.stat(stats, b"ttr"),
                    framing.stat(stats, b"pri"), framing.stat(stats, b"age"), deleted)


def reserve_many(conn: Connection, count: int) -> list[greenstalk.Job[bytes]]:
    """Up to `count` ready jobs in one round trip (`reserve-with-timeout 0`, pipelined)."""
    replies = exchange(conn, [framing.reserve(0)] * count)
    return [job for job in map(framing.reserved_job, replies) if job is not None]


def delete_and_reserve_many(conn: Connection, job_ids: Sequence[int],
                            count: int) -> list[greenstalk.Job[bytes]]:
    """Delete jobs and reserve up to `count` ready ones, in one round trip."""
    replies = exchange(conn, [framing.delete(job_id) for job_id in job_ids]
                       + [framing.reserve(0)] * count)
    for reply in replies[:len(job_ids)]:
        framing.expect(reply, b"DELETED")  # absent is fine; an error answer raises
    return [job for job in map(framing.reserved_job, replies[len(job_ids):])
            if job is not None]


def delete_many(conn: Connection, job_ids: Sequence[int]) -> list[int]:
    """Delete jobs in one round trip; returns the ids the server no longer had."""
    replies = exchange(conn, [framing.delete(job_id) for job_id in job_ids])
    return [job_id for job_id, reply in zip(job_ids, replies, strict=True)
            if not framing.expect(reply, b"DELETED")]


def peek_many(conn: Connection, job_ids: Sequence[int]) -> dict[int, bytes]:
    """The bodies of the jobs (in any state) that exist among `job_ids`, in one round trip."""
    replies = exchange(conn, [framing.peek(job_id) for job_id in job_ids])
    return {job.id: job.body for job in map(framing.reserved_job, replies) if job is not None}


def next_job_id(conn: Connection) -> int:
    """The id the server gives its next job (a marker job is put and deleted to learn it)."""
    client = conn.use_tube("bystroq.marker")
    job_id = client.put(b"", delay=3600)
    client.delete(job_id)
    return int(job_id) + 1


# -- commands queued on a connection's outbox, answered when it is settled ----------------


def queue_reserves(conn: Connection, count: int, into: list[greenstalk.Job[bytes]],
                   first_wait_s: int = 0) -> None:
    """Queue `count` reserves (the first waiting up to `first_wait_s` for a job, the rest
    `reserve-with-timeout 0`); each job reserved is appended to `into` as its answer is
    read."""
    def reserved(reply: framing.Reply) -> None:
        job = framing.reserved_job(reply)
        if job is not None:
            into.append(job)

    conn.queue(framing.reserve(first_wait_s), reserved)
    for _ in range(count - 1):
        conn.queue(framing.reserve(0), reserved)


def queue_deletes(conn: Connection, job_ids: Sequence[int]) -> None:
    """Queue deletes; a job no longer there is fine, any other error answer raises when
    it is read."""
    for job_id in job_ids:
        conn.queue(framing.delete(job_id), _deleted)


def queue_releases(conn: Connection, job_ids: Sequence[int]) -> None:
    """Queue releases (back to ready at once, at the default priority)."""
    for job_id in job_ids:
        conn.queue(framing.release(job_id), _released)


def _deleted(reply: framing.Reply) -> None:
    framing.expect(reply, b"DELETED")


def _released(reply: framing.Reply) -> None:
    framing.expect(reply, b"RELEASED")


def exchange(conn: Connection, commands: Sequence[bytes]) -> list[Reply]:
    """Send commands in one write and read their replies in order: one round trip."""
    conn.send(commands)
    return [conn.read_reply() for _ in commands]


def send(conn: Connection, commands: Sequence[bytes]) -> None:
    """Write commands in one go; read each reply with `read_reply`, in order."""
    conn.send(commands)


def read_reply(conn: Connection) -> Reply:
    """The next reply on the connection; a cut-short reply raises ConnectionError."""
    return conn.read_reply()
