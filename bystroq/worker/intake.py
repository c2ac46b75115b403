"""A slot's intake: jobs reserved in batches over the slot's connections, leased (their
`stats-job` read: attempt, TTR, priority) and held in order until the slot runs them.

A batch is `reserve-with-timeout 0` pipelined k times in one write, with whatever the
connection holds back riding along (events, deletes); only when no server has a job does
the slot wait. With one server it waits in a blocking reserve (k - 1 more behind it take
what else is ready when it returns); with several, it sends one blocking reserve to each
and takes the first answer, so no server waits on another's turn. A blocking reserve still
out when the slot moves on is read when it answers (by the slot, or by the lease keeper's
tick while a handler runs).

Jobs held ahead are leases like a running job's: the keeper touches them, a cancel finds
them, `max_jobs` counts them. At shutdown they go back unrun, each with `release` (delayed
a second) then `kick-job` in one write: the job keeps its place and is ready at once, and
its attempt number is not spent. An attempt is `reserves - (kicks - buries)`: a job can
only leave the buried state by a kick, so a kick after a bury (an operator's, of a failed
or poison job) cancels out and the next run is a new attempt; a kick with no bury before it
is a give-back (or an operator's kick of a delayed job) and takes its reserve back.
"""

from __future__ import annotations

import functools
import math
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bystroq.beanstalk import framing
from bystroq.servers import CONNECTION_ERRORS, Connection, Reply
from bystroq.worker.batch import BatchSize
from bystroq.worker.lease import Lease
from bystroq.worker.outcome import Outcome, Taken

if TYPE_CHECKING:
    from bystroq.worker.loop import Worker

Count = Callable[[Taken, Outcome], None]
# A job given back is released delayed by this much and kicked at once (in the same write):
# were the kick lost, it would still be ready a moment later.
GIVE_BACK_DELAY_S = 1


def attempt_of(stats: bytes) -> int:
    """A job's attempt number from its `stats-job`: reserves, less the reserves given back
    (kicks not preceded by a bury; see the module docstring)."""
    reserves = framing.stat(stats, b"reserves")
    given_back = framing.stat(stats, b"kicks") - framing.stat(stats, b"buries")
    return max(1, reserves - max(0, given_back))


class Intake:
    """Reserved jobs, in the order the slot runs them (`ahead`)."""

    def __init__(self, worker: Worker, conns: Sequence[Connection], count: Count) -> None:
        self.worker, self.conns, self.count = worker, list(conns), count
        self.batch = BatchSize()
        self.ahead: deque[Taken] = deque()
        self._arrived: list[Taken] = []  # reserved, their stats not read yet
        # Connections (by id) with a blocking reserve out whose answer is unread.
        self._pending: dict[int, Connection] = {}
        self._mutex = threading.Lock()  # arrivals are leased by the slot or the keeper
        self._arrivals_lock = threading.Lock()  # only around the list itself
        self._waiting = False
        self._next = 0
        self.last_batch = 0  # how many jobs the last batch brought

    def take(self, wait_s: float, most: int | None = None) -> Taken | None:
        """The next job held, reserving a batch (of up to `most`) first if none is."""
        self._collect()
        if not self.ahead:
            self._fill(wait_s, most or self.batch.size)
        return self.ahead.popleft() if self.ahead else None

    # -- reserving ---------------------------------------------------------------------

    def _fill(self, wait_s: float, size: int) -> None:
        count = self.worker.claimable(size)
        if not count:
            return
        deadline = time.monotonic() + wait_s
        got = self._ready(count)
        while not got and not self.worker.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            got = self._wait(count, remaining)
        if got:
            self.batch.reserved(count, got)
            self.last_batch = got

    def _ready(self, count: int) -> int:
        """Take what the servers have ready, a batch from each in turn, up to `count`."""
        got, n = 0, len(self.conns)
        for i in range(n):
            conn = self.conns[(self._next + i) % n]
            if got >= count:
                break
            if id(conn) in self._pending or not conn.ready():
                continue
            got += self._reserve_on(conn, [framing.reserve(0)] * (count - got))
        self._next = (self._next + 1) % n
        return got

    def _wait(self, count: int, remaining: float) -> int:
        """Wait up to `remaining` seconds for a job on any server."""
        timeout = max(1, math.ceil(remaining))
        if len(self.conns) == 1:
            conn = self.conns[0]
            if not conn.ready():
                time.sleep(max(0.001, min(remaining, conn.retry_at - time.monotonic())))
                return 0
            return self._reserve_on(conn, [framing.reserve(timeout)]
                                    + [framing.reserve(0)] * (count - 1))
        self._waiting = True
        try:
            for conn in self.conns:
                if id(conn) not in self._pending and conn.ready():
                    self._send_blocking(conn, timeout)
            if not self._pending:
                soonest = min(c.retry_at for c in self.conns)
                time.sleep(max(0.001, min(remaining, soonest - time.monotonic())))
                return 0
            by_fd = {conn.fileno(): conn for conn in self._pending.values()}
            readable, _, _ = select.select(list(by_fd), [], [], remaining)
            for fd in readable:
                self._settle_pending(by_fd[fd])
        finally:
            self._waiting = False
        return self._lease_arrivals()

    def _send_blocking(self, conn: Connection, timeout: int) -> None:
        with conn.lock:
            try:
                conn.queue(framing.reserve(timeout),
                           functools.partial(self._on_arrival, conn, time.monotonic()))
                conn.flush()
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)
                return
            self._pending[id(conn)] = conn

    def _settle_pending(self, conn: Connection) -> None:
        with conn.lock:
            try:
                conn.settle()
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)
            finally:
                self._pending.pop(id(conn), None)

    def _collect(self) -> None:
        """Read the answers of blocking reserves that came meanwhile (several servers)."""
        if self._pending:
            for conn in list(self._pending.values()):
                if conn.answered():
                    self._settle_pending(conn)
            self._lease_arrivals()

    def _reserve_on(self, conn: Connection, commands: list[bytes]) -> int:
        """Reserve over `conn` in one write (what it holds back rides along), then read the
        stats of what came in a second; returns how many jobs are now held ahead."""
        jobs: list[Taken] = []
        with conn.lock:
            asked_at = time.monotonic()
            try:
                for command in commands:
                    conn.queue(command, functools.partial(self._on_reserved, conn, asked_at,
                                                          jobs))
                conn.settle()
                if not jobs:
                    return 0
                return self._lease(conn, jobs)
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)  # the server gives the jobs out again
                for job in jobs:
                    if job.lease is None:  # a leased one is held ahead: found lost later
                        self.worker.unclaim()
                return sum(1 for job in jobs if job.lease is not None)

    def _on_reserved(self, conn: Connection, asked_at: float, into: list[Taken],
                     reply: Reply) -> None:
        job = framing.reserved_job(reply)
        if job is None:
            return
        taken = Taken(job.id, job.body, conn, conn.generation, asked_at=asked_at)
        if self.worker.claim():
            into.append(taken)
        else:  # max_jobs reached meanwhile (a blocking reserve on another server answered)
            self._queue_give_back(taken)

    def _on_arrival(self, conn: Connection, asked_at: float, reply: Reply) -> None:
        arrived: list[Taken] = []
        self._on_reserved(conn, asked_at, arrived, reply)
        with self._arrivals_lock:
            self._arrived += arrived

    def _lease_arrivals(self) -> int:
        with self._mutex:
            with self._arrivals_lock:
                arrived, self._arrived = self._arrived, []
            got = 0
            for conn in _conns_of(arrived):
                with conn.lock:
                    try:
                        got += self._lease(conn, [j for j in arrived if j.conn is conn])
                    except CONNECTION_ERRORS as exc:
                        conn.failed(exc)
            return got

    def _lease(self, conn: Connection, jobs: list[Taken]) -> int:
        """Read each job's stats in one round trip and hold it ahead as a lease."""
        held = len(self.ahead)
        for job in jobs:
            conn.queue(framing.stats_job(job.id), functools.partial(self._on_stats, job))
        conn.settle()
        return len(self.ahead) - held

    def _on_stats(self, job: Taken, reply: Reply) -> None:
        if reply.status != b"OK" or reply.body is None:
            if not framing.expect(reply, b"OK"):  # gone already (e.g. its TTR passed)
                self.count(job, Outcome.LOST)
            return
        stats = reply.body
        job.priority, job.age = framing.stat(stats, b"pri"), framing.stat(stats, b"age")
        lease = Lease(job, framing.stat(stats, b"ttr"), attempt=attempt_of(stats),
                      timeout_s=self.worker.conf.timeout, touched_at=job.asked_at)
        job.lease = lease
        self.worker.keeper.add(lease)
        self.ahead.append(job)

    # -- giving back -------------------------------------------------------------------

    def give_back(self) -> int:
        """Give every job held ahead back unrun (release, kick-job: no attempt spent)."""
        for conn in list(self._pending.values()):
            if conn.answered():
                self._settle_pending(conn)  # a job it brought is given back too
            else:  # not waited out: closing ends the reserve (and returns what it may take)
                with conn.lock:
                    conn.close()
                    self._pending.pop(id(conn), None)
        self._lease_arrivals()
        jobs, self.ahead = list(self.ahead), deque()
        given = 0
        for conn in _conns_of(jobs):
            with conn.lock:
                mine = [job for job in jobs if job.conn is conn and job.held]
                try:
                    for job in mine:
                        self._queue_give_back(job)
                    conn.settle()
                    given += len(mine)
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)  # the server gives them out again
        for job in jobs:
            if job.lease is not None:
                self.worker.keeper.remove(job.lease)
            self.worker.unclaim()
        if given:
            self.worker.log.info("jobs held ahead given back unrun", jobs=given)
        return given

    def _queue_give_back(self, job: Taken) -> None:
        conn = job.conn
        conn.queue(framing.release(job.id, job.priority, GIVE_BACK_DELAY_S))
        conn.queue(framing.kick_job(job.id))

    # -- the keeper's tick -------------------------------------------------------------

    def tend(self) -> None:
        """Send what a connection holds back (events, deletes) and read its answers while
        the slot runs a long handler; read blocking reserves that answered."""
        if self._waiting:
            return
        for conn in self.conns:
            if not conn.owes or not conn.lock.acquire(blocking=False):
                continue
            try:
                if id(conn) in self._pending:
                    if conn.answered():
                        conn.settle()
                        self._pending.pop(id(conn), None)
                else:
                    conn.settle()
                    conn.flush()  # what the answers queued (a delete after its event)
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)
                self._pending.pop(id(conn), None)
            finally:
                conn.lock.release()
        if self._arrived:
            self._lease_arrivals()


def _conns_of(jobs: Sequence[Taken]) -> list[Connection]:
    """The connections the jobs came over, each once."""
    return list({id(job.conn): job.conn for job in jobs}.values())
