"""The events consumer: events tubes on every server → submission records.

Each round reserves a batch of events per server (one pipelined round trip), applies them
to the store in one transaction, and only then deletes them, in the same write as the
reserves of the next batch while batches come full (one round trip a batch). A crash
between commit and delete means the events come back and are applied again, which the
store's state machine makes harmless. Malformed events are buried, never dropped; so is an
event the store refuses (the rest of its batch is applied without it). While the store
cannot be reached, no event is reserved: they wait on the server. Each round also reads
the workers' heartbeats into the live-workers table (bystroq.heartbeats).

When nothing is ready and there is one server, the consumer waits there on all its events
tubes and heartbeat tubes (a reserve the server holds up to IDLE_WAIT_S and answers the
moment an event or a beat arrives: a beat is given back at once for the heartbeat reader),
so live views see an event as soon as it is put; with several servers it looks at each
again after a pause that doubles up to IDLE_POLL_MAX_S (waiting on one would keep the
others waiting).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import greenstalk
import structlog

from bystroq.config import LoadedConfig
from bystroq.errors import DecodeError, StoreUnavailable
from bystroq.heartbeats import HeartbeatReader
from bystroq.records.model import IncomingEvent, parse_event
from bystroq.records.store import EventWriter
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    ServerHealth,
    delete_and_reserve_many,
    delete_many,
    reserve_many,
    servers_of,
)
from bystroq.tracing import link_applied

BATCH = 500
# Batches taken from one server in one step before the next server's turn.
BATCHES_PER_ROUND = 8
IDLE_POLL_MAX_S = 0.1
# Idle with one connection: the server holds a reserve this long (whole seconds) and
# answers it the moment an event arrives, so a live view sees it at once.
IDLE_WAIT_S = 1


StoreError = Literal["refused", "unavailable"]


class ConsumerObserver(Protocol):
    """What the consumer tells whoever watches it (bystroq.metrics.consumer counts it)."""

    def applied(self, category: str, events: Sequence[IncomingEvent]) -> None: ...

    def malformed(self, category: str) -> None: ...

    def store_error(self, category: str, error: StoreError) -> None: ...


class NoObserver:
    """Watches nothing: the consumer's default."""

    def applied(self, category: str, events: Sequence[IncomingEvent]) -> None:
        pass

    def malformed(self, category: str) -> None:
        pass

    def store_error(self, category: str, error: StoreError) -> None:
        pass


@dataclass
class ConsumerStats:
    applied: int = 0
    malformed: int = 0
    rejected: int = 0  # well-formed events the store refused (buried)
    store_outages: int = 0
    rounds: int = 0
    by_event: dict[str, int] = field(default_factory=dict)


class Consumer:
    """Applies events from the chosen categories' events tubes to a records store."""

    def __init__(
        self, config: LoadedConfig, store: EventWriter, categories: Sequence[str] | None = None,
        batch: int = BATCH, observer: ConsumerObserver | None = None,
    ) -> None:
        tubes = config.config.beanstalkd.tubes
        names = [config.category_name(c) for c in categories] if categories else list(tubes)
        self.category_of = {tubes[name].events: name for name in names}
        self.store = store
        self.batch = batch
        # One connection per server and events tube, so each event's category is known.
        health = ServerHealth()
        servers = servers_of(config.addresses)
        self.conns = [(Connection(server, watch=[tube], health=health), name)
                      for server in servers
                      for tube, name in self.category_of.items()]
        self.beats = HeartbeatReader(config, store, names, health)
        # With one server, idle waits there on every events and heartbeat tube at once
        # (see run()).
        self._waiter = (Connection(servers[0], watch=[*self.category_of, *self.beats.tubes],
                                   health=health)
                        if len(servers) == 1 else None)
        self.stats = ConsumerStats()
        self.observer: ConsumerObserver = observer or NoObserver()
        self.log = structlog.get_logger("bystroq.consumer")
        self._stopping = False

    def step(self) -> int:
        """One round over every server: events applied (0 when none was ready)."""
        applied = 0
        for conn, category in self.conns:
            if self.store.available_in() > 0:
                break  # events wait on the server until the store is back
            if not conn.ready():
                continue
            with conn.lock:
                try:
                    applied += self._round(conn, category)
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)  # reserved events go back to ready on the server
        self.beats.step()
        self.stats.rounds += 1
        return applied

    def _round(self, conn: Connection, category: str) -> int:
        """Batches from one server while they come full (at most BATCHES_PER_ROUND, so
        other servers are not kept waiting); the deletes of a stored batch go in the same
        write as the reserves of the next."""
        applied = 0
        jobs = reserve_many(conn, self.batch)
        for turn in range(BATCHES_PER_ROUND):
            if not jobs:
                break
            stored = self._apply(conn, category, jobs)
            if stored is None:
                break  # the store is unavailable: the events were released
            applied += len(stored)
            if (len(jobs) < self.batch or turn == BATCHES_PER_ROUND - 1
                    or self.store.available_in() > 0):
                delete_many(conn, stored)  # only after the commit
                break
            jobs = delete_and_reserve_many(conn, stored, self.batch)
        return applied

    def _apply(self, conn: Connection, category: str,
               jobs: list[greenstalk.Job[bytes]]) -> list[int] | None:
        """Apply a batch of events in one transaction; the ids of the event jobs stored
        (to be deleted), or None when the store was unavailable (all were released)."""
        events: list[tuple[IncomingEvent, greenstalk.Job[bytes]]] = []
        for job in jobs:
            try:
                events.append((parse_event(job.body, category, conn.server.name, job.id), job))
            except DecodeError as exc:
                self.stats.malformed += 1
                self.observer.malformed(category)
                self.log.error("malformed event buried", server=conn.server.name,
                               queueID=job.id, reason=str(exc))
                conn.client.bury(job)
        started_ns = time.time_ns()
        try:
            stored = self._store(conn, category, events)
        except StoreUnavailable:
            self.stats.store_outages += 1
            self.observer.store_error(category, "unavailable")
            for _, job in events:  # back to ready at once, for when the store returns
                conn.client.release(job)
            return None
        self.stats.applied += len(stored)
        self.observer.applied(category, [event for event, _ in stored])
        for event, _ in stored:
            self.stats.by_event[event.event] = self.stats.by_event.get(event.event, 0) + 1
        link_applied(category, (event.body for event, _ in stored), started_ns)
        return [job.id for _, job in stored]

    def _store(
        self, conn: Connection, category: str,
        events: list[tuple[IncomingEvent, greenstalk.Job[bytes]]],
    ) -> list[tuple[IncomingEvent, greenstalk.Job[bytes]]]:
        """Apply the events in one transaction; if the store refuses the batch, apply them
        one by one and bury each it refuses. Returns those stored."""
        if not events:
            return []
        try:
            self.store.apply_events([event for event, _ in events])
            return events
        except StoreUnavailable:
            raise
        except Exception:
            pass  # one of them, at least, is refused: find which
        stored = []
        for event, job in events:
            try:
                self.store.apply_events([event])
                stored.append((event, job))
            except StoreUnavailable:
                raise
            except Exception as exc:
                self.stats.rejected += 1
                self.observer.store_error(category, "refused")
                self.log.error("event refused by the records store, buried",
                               server=conn.server.name, queueID=job.id,
                               submissionID=event.submission_id,
                               reason=f"{type(exc).__name__}: {exc}".splitlines()[0])
                conn.client.bury(job)
        return stored

    def drain(self) -> int:
        """Apply events until none is ready."""
        applied = 0
        while count := self.step():
            applied += count
        return applied

    def after_round(self, applied: int, burst: bool) -> int:
        """Work done beside each round (bystroq.ops.consume feeds batches here); how much."""
        return 0

    def run(self, burst: bool = False) -> ConsumerStats:
        """Apply events until stopped, or in burst mode until idle."""
        pause = 0.005
        while not self._stopping:
            applied = self.step()
            done = self.after_round(applied, burst)
            if applied or done:
                pause = 0.005
                continue
            if burst:
                break
            waited = self._wait_on_server()
            if waited is None:
                time.sleep(pause)
                pause = min(pause * 2, IDLE_POLL_MAX_S)
            elif waited:
                self.after_round(waited, burst)
                pause = 0.005
        return self.stats

    def _wait_on_server(self) -> int | None:
        """Idle, with one server: wait up to IDLE_WAIT_S there for the next event on any of
        the events tubes and apply it; how many were applied. None when it cannot wait:
        with several servers (waiting on one would keep the others waiting), or while the
        server or the store is away; the caller then sleeps."""
        conn = self._waiter
        if conn is None or self.store.available_in() > 0 or not conn.ready():
            return None
        with conn.lock:
            try:
                try:
                    job = conn.client.reserve(IDLE_WAIT_S)
                except greenstalk.TimedOutError:
                    return 0
                category = self.category_of.get(conn.client.stats_job(job)["tube"])
                if category is None:  # a worker's beat: the heartbeat reader takes it now
                    conn.client.release(job)
                    if not self.beats.step(force=True):
                        time.sleep(IDLE_POLL_MAX_S)  # its reader is away: do not spin
                    return 0
                stored = self._apply(conn, category, [job])
                if stored is None:
                    return None  # the store is away: the event was released
                delete_many(conn, stored)  # only after the commit
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)  # a reserved event goes back to ready on the server
                return None
        return len(stored)

    def stop(self) -> None:
        """Stop after the current round (an idle wait on the server ends within
        IDLE_WAIT_S)."""
        self._stopping = True

    def close(self) -> None:
        self.beats.close()
        conns = [conn for conn, _ in self.conns]
        if self._waiter is not None:
            conns.append(self._waiter)
        for conn in conns:
            with conn.lock:
                conn.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
