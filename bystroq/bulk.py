"""Many puts pipelined over the servers, and what became of each job.

A bulk put writes its jobs in chunks, each chunk's puts in one `sendall`, the chunks
spread round robin over the servers that are up. The answers of a chunk are read while
the server already works on the next one (two chunks in flight with one server, one a
server with more), so a round trip is shared by a chunk's jobs and the server never waits
for the client.

Every job ends in one of three places (`Bulk`): in (its server answered INSERTED, or
BURIED when it was out of memory), unknown (its put was written and never answered: it
may be on that server, so it is never put again) or not put (no server took it in time,
or a server refused it and no other could: putting it again is safe). A refusal
(DRAINING, OUT_OF_MEMORY) sends the refused jobs to the other servers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import greenstalk

from bystroq.errors import JobTooBig, ServersUnavailable
from bystroq.puts import bound_wait, drop_if_closed, too_big
from bystroq.servers import CONNECTION_ERRORS, Connection, Server, wait_for_any

# Chunks written to one connection and not yet answered; in all, at most this or one a
# connection (so a server that stops answering holds as few jobs in doubt as can be).
WINDOW = 2
# Answers a put may get that mean the job is in.
_IN = frozenset({b"INSERTED", b"BURIED"})


class Bulk:
    """Where each job of a bulk put stands, by its index."""

    def __init__(self, count: int) -> None:
        self.job_ids: list[int | None] = [None] * count
        self.servers: list[Server | None] = [None] * count
        self.unknown: list[int] = []
        self.not_put: list[int] = []
        self.lost_at: dict[int, tuple[Server, float, str]] = {}

    @property
    def any_put(self) -> bool:
        return any(job_id is not None for job_id in self.job_ids)

    def lost(self, indices: Sequence[int], server: Server, sent_at: float,
             error: BaseException) -> None:
        reason = (f"{server} did not answer a bulk put within the wait "
                  f"({str(error) or type(error).__name__}); it may still run: do not submit "
                  f"it again")
        self.unknown += indices
        for index in indices:
            self.lost_at[index] = (server, sent_at, reason)

    def message(self, wait_s: float) -> str:
        """What became of the jobs, for SubmitIncomplete."""
        done = sum(job_id is not None for job_id in self.job_ids)
        parts = [f"{done} of {len(self.job_ids)} jobs were submitted"]
        if self.unknown:
            parts.append(f"{len(self.unknown)} were sent and never answered (outcome "
                         f"unknown: do not submit them again; their records say unknown)")
        if self.not_put:
            parts.append(f"{len(self.not_put)} were not put (no server took them within "
                         f"{wait_s:g} s; submitting those again is safe)")
        return "; ".join(parts)


@dataclass
class Inflight:
    """A chunk of puts written over `conn` (in its `generation`) and not yet answered."""

    conn: Connection
    generation: int
    part: Sequence[int]
    sent_at: float


class BulkPut:
    """One bulk put of `bodies` on `tube` (see the module docstring); `run()` once.

    `pick()` names the next connection that is ready (the producer's round robin);
    `settled(bulk, part)` is called with the jobs of each chunk once their fate is known (the
    producer writes their records). Each chunk in flight holds its connection's lock.
    """

    def __init__(self, conns: Sequence[Connection], pick: Callable[[], Connection | None],
                 tube: str, bodies: Sequence[bytes], head: bytes | Sequence[bytes],
                 wait_s: float,
                 chunk: int, settled: Callable[[Bulk, Sequence[int]], None]) -> None:
        self.conns, self.pick, self.tube, self.bodies = conns, pick, tube, bodies
        # One put is `head` (b"put <pri> <delay> <ttr> ", the same for every job or one a
        # job), the body's size, the body.
        self.form = head.replace(b"%", b"%%") + b"%d\r\n%b\r\n" if isinstance(
            head, bytes) else b""
        self.heads = None if isinstance(head, bytes) else head
        self.wait_s, self.settled = wait_s, settled
        self.bulk = Bulk(len(bodies))
        self.longest = max(map(len, bodies), default=0)
        self.todo: deque[Sequence[int]] = deque(
            range(start, min(len(bodies), start + chunk))
            for start in range(0, len(bodies), chunk))
        self.inflight: deque[Inflight] = deque()
        self.window = max(WINDOW, len(conns))
        self.deadline = time.monotonic() + wait_s

    def run(self) -> Bulk:
        try:
            while self.todo or self.inflight:
                if not self.todo:
                    self._settle_oldest()
                    continue
                conn = self.pick() if len(self.inflight) < self.window else None
                if conn is None or self._in_flight(conn) >= WINDOW:
                    if self.inflight:
                        self._settle_oldest()
                    elif not self._wait():
                        break
                    continue
                self._send(conn, self.todo.popleft())
        finally:
            for sent in self.inflight:  # only after an unexpected error: give the locks back
                sent.conn.lock.release()
        return self.bulk

    def _in_flight(self, conn: Connection) -> int:
        return sum(sent.conn is conn for sent in self.inflight)

    def _wait(self) -> bool:
        """Wait for a server to come back; False (the rest not put) past the deadline."""
        try:
            wait_for_any(self.conns, self.deadline)
        except ServersUnavailable:
            self.bulk.not_put += [i for part in self.todo for i in part]
            self.todo.clear()
            return False
        return True

    def _send(self, conn: Connection, part: Sequence[int]) -> None:
        """Write a chunk's puts at once; a failure before the write puts the chunk back
        for another server, a failure during it makes the chunk's outcome unknown."""
        conn.lock.acquire()
        try:
            if not self._in_flight(conn):
                drop_if_closed(conn)
            bound_wait(conn, self.deadline - time.monotonic(), self.wait_s)
            if self.longest > conn.max_job_size():
                self._too_big(conn, part)
                conn.lock.release()
                return
            conn.use_tube(self.tube)
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)
            self.todo.appendleft(part)
            conn.lock.release()
            return
        except BaseException:
            conn.lock.release()
            raise
        bodies, form, heads = self.bodies, self.form, self.heads
        if heads is None:
            data = b"".join([form % (len(body), body)
                             for body in map(bodies.__getitem__, part)])
        else:
            data = b"".join([b"%b%d\r\n%b\r\n" % (heads[i], len(bodies[i]), bodies[i])
                             for i in part])
        sent_at = time.time()
        try:
            conn.send([data])
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)  # some of the chunk may have reached the server
            self.bulk.lost(part, conn.server, sent_at, exc)
            conn.lock.release()
            self.settled(self.bulk, part)
            return
        self.inflight.append(Inflight(conn, conn.generation, part, sent_at))

    def _too_big(self, conn: Connection, part: Sequence[int]) -> None:
        """A body over this server's max-job-size: nothing is put if nothing was yet,
        else the rest is reported as not put (a server with a smaller limit)."""
        index, biggest = max(enumerate(self.bodies), key=lambda b: len(b[1]))
        if not self.bulk.any_put and not self.inflight:
            raise JobTooBig(too_big(conn, biggest), index)
        self.bulk.not_put += [i for p in (part, *self.todo) for i in p]
        self.todo.clear()

    def _settle_oldest(self) -> None:
        sent = self.inflight.popleft()
        try:
            refused = self._read(sent)
        finally:
            sent.conn.lock.release()
        if refused:  # draining or out of memory: the rest goes to other servers
            self.todo.append(refused)
            if not self._in_flight(sent.conn):
                sent.conn.failed(greenstalk.UnknownResponseError(b"refused", []))
        if refused:
            out = set(refused)
            self.settled(self.bulk, [i for i in sent.part if i not in out])
        else:
            self.settled(self.bulk, sent.part)
        self.deadline = time.monotonic() + self.wait_s

    def _read(self, sent: Inflight) -> list[int]:
        """Read a written chunk's answers; returns the jobs the server refused (not put:
        they go to another server). Those never answered are unknown."""
        conn, part, bulk = sent.conn, sent.part, self.bulk
        answered: list[bytes] = []
        try:
            if conn.generation != sent.generation:  # its connection failed since
                raise ConnectionError("the connection was lost before the answers")
            conn.read_lines(len(part), into=answered)
        except CONNECTION_ERRORS as exc:
            if conn.generation == sent.generation:
                conn.failed(exc)
            bulk.lost(part[len(answered):], conn.server, sent.sent_at, exc)
        refused: list[int] = []
        server, job_ids, servers = conn.server, bulk.job_ids, bulk.servers
        for index, line in zip(part, answered, strict=False):
            status, _, value = line.partition(b" ")
            if status in _IN:  # BURIED: in, but the server is out of memory
                job_ids[index] = int(value)
                servers[index] = server
            else:
                refused.append(index)
        return refused
