"""Heartbeats: a worker announces itself on its category's heartbeat tube on every server.

Every `interval_s` (and at once when its state changes) a thread puts a Heartbeat (who
and where the worker is, its slots, the jobs it runs now) on `heartbeat_tube(submission)`
on each server; the events consumer reads them into the store's live-workers table, so the
worker never learns about the store.

Beanstalkd has no expiry for a job, so the tube must stay small when no consumer reads it:
- each beat deletes the worker's own previous beat in the same write (a beat the consumer
  has reserved is not deleted: beanstalkd leaves a reserved job to its reserver), so a
  living worker keeps at most one beat waiting per server;
- each beat also peeks at the oldest ready beat of the tube and deletes it when it is
  older than STALE_INTERVALS of its own interval: what a worker that died left behind is
  cleared by the category's other workers.
On a clean exit the worker puts one last beat, `stopped`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING

import msgspec
import structlog

from bystroq.beanstalk import framing
from bystroq.control import Heartbeat, HeldJob, WorkerState
from bystroq.messages import encode, submission_id_of
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    Server,
    ServerHealth,
    connections,
    exchange,
    reserved_job,
)

if TYPE_CHECKING:
    from bystroq.worker.loop import Worker

DEFAULT_INTERVAL_S = 5.0
# A beat older than this many of its intervals is a dead worker's: any worker deletes it.
STALE_INTERVALS = 12
# Beats are small and urgent to nobody: after every job at the default priority.
BEAT_PRIORITY = 2**31
BEAT_TTR_S = 30
# The jobs listed in one beat (`slotsBusy` still counts them all).
MAX_LISTED_JOBS = 100

_DECODE_BEAT = msgspec.json.Decoder(Heartbeat)


def version() -> str:
    try:
        return metadata.version("bystroq")
    except metadata.PackageNotFoundError:
        return "unknown"


def heartbeat_of(worker: Worker, state: WorkerState, interval_s: float,
                 started_at: float) -> Heartbeat:
    """What `worker` is and runs now (jobs held ahead, not running yet, are not listed)."""
    leases = worker.running()
    jobs = [HeldJob(submissionID=submission_id_of(lease.job.body), queueID=lease.job.id,
                    server=lease.job.server.name) for lease in leases[:MAX_LISTED_JOBS]]
    return Heartbeat(worker=worker.worker_id, host=socket.gethostname(), pid=os.getpid(),
                     category=worker.category, state=state, slotsBusy=len(leases),
                     slotsTotal=worker.concurrency, isolation=worker.isolation,
                     version=version(), startedAt=started_at, at=time.time(),
                     intervalS=interval_s, jobs=jobs)


def is_stale(body: bytes, now: float) -> bool:
    """Whether a beat on the tube is a dead worker's (an unreadable one is stale too)."""
    try:
        beat = _DECODE_BEAT.decode(body)
    except msgspec.DecodeError:
        return True
    return now - beat.at > STALE_INTERVALS * max(beat.intervalS, 1.0)


class HeartbeatSender:
    """A thread that puts `beat()` on `tube` on every server every `interval_s`."""

    def __init__(self, servers: Sequence[Server], tube: str, interval_s: float,
                 beat: Callable[[], Heartbeat], health: ServerHealth | None = None) -> None:
        self.conns = connections(servers, use=tube, health=health)
        self.interval_s = interval_s
        self.beat = beat
        self._previous: dict[int, int] = {}  # connection index -> our last beat's job id
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bystroq-heartbeat",
                                        daemon=True)
        self.log = structlog.get_logger("bystroq.heartbeat")

    def start(self) -> HeartbeatSender:
        self._thread.start()
        return self

    def beat_now(self) -> None:
        """Beat without waiting for the interval (the worker's state changed)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self.send(self.beat())
            except Exception:  # a bug here must not stop the worker's jobs
                self.log.exception("heartbeat failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def send(self, beat: Heartbeat) -> None:
        """Put `beat` on every server that is up (one round trip each)."""
        body = encode(beat)
        for index, conn in enumerate(self.conns):
            if not conn.ready():
                continue
            with conn.lock:
                try:
                    self._put_on(index, conn, body)
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)
                    self._previous.pop(index, None)

    def _put_on(self, index: int, conn: Connection, body: bytes) -> None:
        previous = self._previous.pop(index, None)
        commands = [] if previous is None else [framing.delete(previous)]
        commands += [framing.put(body, BEAT_PRIORITY, 0, BEAT_TTR_S), framing.peek_ready()]
        replies = exchange(conn, commands)
        put, peeked = replies[-2], reserved_job(replies[-1])
        if put.status == b"INSERTED":
            self._previous[index] = int(put.values[0])
        else:
            self.log.warning("heartbeat not stored", server=conn.server.name,
                             error=put.status.decode(errors="replace"))
        if (peeked is not None and peeked.id != self._previous.get(index)
                and is_stale(peeked.body, time.time())):
            exchange(conn, [framing.delete(peeked.id)])  # absent by now is fine

    def close(self, last: Heartbeat | None = None) -> None:
        """Stop beating; put `last` (the `stopped` beat) first when given."""
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if last is not None:
            self.send(last)
        for conn in self.conns:
            with conn.lock:
                conn.close()
