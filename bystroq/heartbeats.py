"""Workers' heartbeats -> the store's live-workers table, read beside the events.

The events consumer (bystroq.consumer) runs a HeartbeatReader each round: at most every
POLL_S (or a quarter of the shortest heartbeat interval seen, so that the table is never
far behind a worker that beats often) it reserves the beats waiting on its categories'
heartbeat tubes
(bystroq.messages.heartbeat_tube) on every server, saves the newest of each worker in one
transaction, then deletes them. A beat is worth nothing once a newer one exists, so an
unreadable beat, or one the store refuses, is deleted (and logged), never buried; while
the store is away the beats are released for later.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import greenstalk
import msgspec
import structlog

from bystroq.config import LoadedConfig
from bystroq.control import Heartbeat, heartbeat_tube
from bystroq.errors import StoreUnavailable
from bystroq.records.store import EventWriter
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    ServerHealth,
    delete_many,
    reserve_many,
    servers_of,
)

POLL_S = 0.5
MIN_POLL_S = 0.02
# Beats reserved at once (one pipelined round trip), and the most batches a look takes
# while they come full: a tube holds about one beat per living worker.
BATCH = 50
BATCHES_PER_LOOK = 20

_DECODE = msgspec.json.Decoder(Heartbeat)


class HeartbeatReader:
    """Reads the heartbeat tubes of `categories` into `store` (see the module docstring)."""

    def __init__(self, config: LoadedConfig, store: EventWriter, categories: Sequence[str],
                 health: ServerHealth | None = None) -> None:
        self.store = store
        self.tubes = tubes = sorted({heartbeat_tube(config.category(name).submission)
                                     for name in categories})
        health = health or ServerHealth()
        self.conns = [Connection(server, watch=tubes, health=health)
                      for server in servers_of(config.addresses)]
        self.log = structlog.get_logger("bystroq.heartbeats")
        self.read = 0
        self._due = 0.0
        self._poll_s = POLL_S

    def step(self, force: bool = False) -> int:
        """Save the beats waiting (unless the last look was under POLL_S ago); how many."""
        now = time.monotonic()
        if (not force and now < self._due) or self.store.available_in() > 0:
            return 0
        self._due = now + self._poll_s
        saved = 0
        for conn in self.conns:
            if not conn.ready():
                continue
            with conn.lock:
                try:
                    for _ in range(BATCHES_PER_LOOK):
                        taken, stored = self._round(conn)
                        saved += stored
                        if taken < BATCH:
                            break
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)  # reserved beats go back to ready on the server
        self.read += saved
        return saved

    def _round(self, conn: Connection) -> tuple[int, int]:
        """One batch: (beats taken from the tube, beats saved)."""
        jobs = reserve_many(conn, BATCH)
        if not jobs:
            return 0, 0
        beats = [beat for beat in map(self._decode, jobs) if beat is not None]
        if beats:
            shortest = min(beat.intervalS for beat in beats)
            self._poll_s = max(MIN_POLL_S, min(self._poll_s, shortest / 4))
        try:
            if beats:
                self.store.save_beats(beats)
        except StoreUnavailable:
            for job in jobs:
                conn.client.release(job)
            return 0, 0
        except Exception as exc:
            self.log.error("heartbeats refused by the records store, deleted",
                           server=conn.server.name, count=len(beats),
                           reason=f"{type(exc).__name__}: {exc}".splitlines()[0])
            beats = []
        delete_many(conn, [job.id for job in jobs])
        return len(jobs), len(beats)

    def _decode(self, job: greenstalk.Job[bytes]) -> Heartbeat | None:
        try:
            return _DECODE.decode(job.body)
        except msgspec.DecodeError as exc:
            self.log.error("malformed heartbeat deleted", queueID=job.id, reason=str(exc))
            return None

    def close(self) -> None:
        for conn in self.conns:
            with conn.lock:
                conn.close()
