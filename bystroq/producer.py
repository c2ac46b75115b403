"""Putting jobs on a category's submission tube, spread over every configured server."""


from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import greenstalk
import msgspec

from bystroq.config import DEFAULT_PRIORITY, LoadedConfig
from bystroq.errors import (
    BystroqError,
    JobTooBig,
    ServersUnavailable,
    SubmitIncomplete,
    SubmitOutcomeUnknown,
)
from bystroq.messages import encode, record_key
from bystroq.puts import (
    Bulk,
    Inflight,
    NoAnswer,
    bound_wait,
    check_size,
    drop_if_closed,
    incomplete_message,
    job_submission_id,
    too_big,
    unknown_message,
)
from bystroq.recording import (
    FROM_CONFIG,
    UNIQUE_HOLD_S,
    FromConfig,
    RecorderHealth,
    RecordReader,
    SubmitRecorder,
    Submitted,
    unique_claims,
)
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    Server,
    connections,
    expect,
    put_command,
    read_reply,
    send,
    servers_of,
    wait_for_any,
)
from bystroq.tracing import with_traceparent

__all__ = ["DEFAULT_PRIORITY", "DEFAULT_WAIT_S", "FROM_CONFIG", "FromConfig", "Producer",
           "SubmitRecorder", "Submitted"]


DEFAULT_WAIT_S = 5.0
# A job as a producer takes it: a Struct, a mapping, or a body already encoded.
Job = msgspec.Struct | Mapping[str, Any] | bytes
# Puts written at once by submit_many: large enough that a round trip is shared by many
# jobs, small enough that a cut connection leaves few outcomes unknown.
SUBMIT_CHUNK = 256
# Queued records submit_many writes in one transaction.
RECORD_BATCH = 2048


class Producer:
    """Submits jobs; thread-safe; one connection per server, used round robin.

    A server that fails before a put reaches it is skipped (and retried after a backoff)
    while others take the jobs; only when every server is down for `wait_s` does `submit`
    raise ServersUnavailable (nothing was put). A put that was sent but not answered within
    `wait_s` raises SubmitOutcomeUnknown: the job may be on that server, so it is never put
    again elsewhere. The records store failing never fails a put that succeeded.
    """

    def __init__(
        self,
        config: LoadedConfig,
        *,
        wait_s: float = DEFAULT_WAIT_S,
        recorder: SubmitRecorder | FromConfig | None = FROM_CONFIG,
    ) -> None:
        self.config = config
        self.wait_s = wait_s
        self._owned_store: Any = None
        if isinstance(recorder, FromConfig):  # the config's store; None opts out
            recorder = None
            if config.config.records:
                from bystroq.records import open_store

                recorder = self._owned_store = open_store(config.config.records)
        self.recorder = recorder
        self._conns = connections(servers_of(config.addresses))
        for conn in self._conns:
            conn.limit(wait_s)  # a server that stops answering costs one wait, not 30 s
        # Each process starts its round robin at a random server, so many short-lived
        # producers (one `bystroq submit` each) spread over the servers too.
        self._next = random.randrange(len(self._conns))
        self._lock = threading.Lock()
        self._records = RecorderHealth(recorder)

    def submit(
        self,
        category: str,
        job: msgspec.Struct | Mapping[str, Any] | bytes,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int | None = None,
        batch: str | None = None,
        unique: bool | None = None,
    ) -> Submitted:
        """Put one job on `category`'s submission tube; return where it went.

        Raises ServersUnavailable or JobTooBig when the job was not put (submitting it
        again is safe), SubmitOutcomeUnknown when it may have been (do not submit it again;
        its record, state `unknown`, follows the job's events if it arrives).
        `unique` (default: the category's `unique:`) refuses, with DuplicateSubmission, a
        job whose submission is still queued or running (it needs the records store).
        """
        with self._unique(category, [job], unique):
            return self._submit(category, job, priority=priority, delay=delay, ttr=ttr,
                                batch=batch)

    def _unique(self, category: str, jobs: Sequence[Job], unique: bool | None
                ) -> AbstractContextManager[None]:
        if not (self.config.category(category).unique if unique is None else unique):
            return nullcontext()
        return unique_claims(self.recorder, [job_submission_id(job) for job in jobs],
                             hold_s=self.wait_s + UNIQUE_HOLD_S)

    def _submit(
        self,
        category: str,
        job: Job,
        *,
        priority: int,
        delay: int,
        ttr: int | None,
        batch: str | None,
    ) -> Submitted:
        conf = self.config.category(category)
        body = with_traceparent(job if isinstance(job, bytes)
                                else encode(job, self.config.config.wire))
        record = self.recorder is not None
        submission_id = job_submission_id(job) if record or not isinstance(job, bytes) else None
        name = self.config.category_name(category)
        sid = None if submission_id is None else record_key(submission_id)
        recorder = self.recorder if sid is not None else None
        try:
            job_id, conn = self._put(conf.submission, body, priority, delay, ttr or conf.ttr)
        except NoAnswer as lost:
            error = SubmitOutcomeUnknown(unknown_message(lost, submission_id, self.wait_s))
            if recorder is not None and sid is not None:
                self._records.write(partial(
                    recorder.record_submit_unknown, sid, name, lost.server.name, str(error),
                    lost.sent_at, batch=batch, body=body))
            raise error from lost.error
        except Exception as exc:
            if recorder is not None and sid is not None:
                self._records.write(partial(
                    recorder.record_submit_failed, sid, name, f"submit failed: {exc}"))
            raise
        handle = Submitted(job_id, conn.server, conf.submission, submission_id,
                           records=self._reader())
        if recorder is not None and sid is not None:
            self._records.write(partial(recorder.record_queued, sid, name, job_id,
                                        handle.server.name, batch=batch, body=body))
        return handle

    def _put(
        self, tube: str, body: bytes, priority: int, delay: int, ttr: int
    ) -> tuple[int, Connection]:
        """Put on the first server that takes the job. A failure before the whole put is
        handed to the socket means it was not put (try the next server); after that, only
        the server's answer tells, and no answer raises NoAnswer."""
        deadline = time.monotonic() + self.wait_s
        command = put_command(body, priority, delay, ttr)
        while True:
            with self._lock:
                start = self._next
                self._next = (self._next + 1) % len(self._conns)
            for i in range(len(self._conns)):
                conn = self._conns[(start + i) % len(self._conns)]
                if not conn.ready():
                    continue
                with conn.lock:
                    try:
                        drop_if_closed(conn)
                        bound_wait(conn, deadline - time.monotonic(), self.wait_s)
                        check_size(conn, body)
                        conn.use_tube(tube)
                        sent_at = time.time()
                        send(conn, [command])
                    except CONNECTION_ERRORS as exc:
                        conn.failed(exc)
                        continue
                    try:
                        reply = read_reply(conn)
                    except CONNECTION_ERRORS as exc:
                        conn.failed(exc)
                        raise NoAnswer(conn.server, sent_at, exc) from exc
                    try:
                        expect(reply, b"INSERTED")
                        return int(reply[1][0]), conn
                    except greenstalk.JobTooBigError:
                        raise JobTooBig(too_big(conn, body)) from None
                    except (greenstalk.DrainingError, greenstalk.OutOfMemoryError) as exc:
                        conn.failed(exc)  # the server refused it: nothing was put
            wait_for_any(self._conns, deadline)

    def submit_many(
        self,
        category: str,
        jobs: Sequence[Job],
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int | None = None,
        batch: str | None = None,
        chunk: int = SUBMIT_CHUNK,
        unique: bool | None = None,
    ) -> list[Submitted]:
        """`submit` for many jobs (see `_submit_many`); with `unique`, nothing is put
        when any of them is still queued or running (DuplicateSubmission names one)."""
        with self._unique(category, jobs, unique):
            return self._submit_many(category, jobs, priority=priority, delay=delay,
                                     ttr=ttr, batch=batch, chunk=chunk)

    def _submit_many(
        self,
        category: str,
        jobs: Sequence[Job],
        *,
        priority: int,
        delay: int,
        ttr: int | None,
        batch: str | None,
        chunk: int,
    ) -> list[Submitted]:
        """Put many jobs on `category`'s submission tube, `chunk` puts a write, the chunks
        spread over the servers; returns a handle per job, in order.

        Every body is encoded and checked against max-job-size before the first put
        (JobTooBig: nothing was put). A server that fails before a chunk is written is
        skipped, as in `submit`. When some jobs could not be put, or a connection was cut
        after a chunk was written, SubmitIncomplete says which jobs are in, which are
        unknown (sent, never answered: never put again) and which were not put.
        """
        conf = self.config.category(category)
        name = self.config.category_name(category)
        bodies = [with_traceparent(job if isinstance(job, bytes) else encode(job))
                  for job in jobs]
        record = self.recorder is not None
        ids = [job_submission_id(job) if record or not isinstance(job, bytes) else None
               for job in jobs]
        commands = [put_command(body, priority, delay, ttr or conf.ttr) for body in bodies]
        bulk = Bulk(len(jobs))
        longest = max(map(len, bodies), default=0)
        todo = deque(list(range(start, min(len(jobs), start + chunk)))
                     for start in range(0, len(jobs), chunk))
        deadline = time.monotonic() + self.wait_s
        unrecorded: list[int] = []  # jobs whose records are written together
        # Chunks written and not yet answered (at most two: the server works on the next
        # while the answers to the last are read); each holds its connection's lock.
        inflight: deque[Inflight] = deque()

        def settle_oldest() -> None:
            nonlocal unrecorded, deadline
            sent = inflight.popleft()
            try:
                refused = self._read_chunk(sent, bulk)
            finally:
                sent.conn.lock.release()
            if refused:  # draining or out of memory: the rest goes to other servers
                todo.append(refused)
                if not any(other.conn is sent.conn for other in inflight):
                    sent.conn.failed(greenstalk.UnknownResponseError(b"refused", []))
            unrecorded += sent.part
            if len(unrecorded) >= RECORD_BATCH:
                self._record_chunk(name, ids, bodies, bulk, unrecorded, batch)
                unrecorded = []
            deadline = time.monotonic() + self.wait_s

        try:
            while todo or inflight:
                if not todo or len(inflight) == 2:
                    settle_oldest()
                    continue
                conn = self._next_ready()
                if conn is None:
                    if inflight:
                        settle_oldest()
                        continue
                    try:
                        wait_for_any(self._conns, deadline)
                    except ServersUnavailable:
                        bulk.not_put += [i for part in todo for i in part]
                        break
                    continue
                part = todo.popleft()
                conn.lock.acquire()
                try:
                    if not any(sent.conn is conn for sent in inflight):
                        drop_if_closed(conn)
                    bound_wait(conn, deadline - time.monotonic(), self.wait_s)
                    if longest > conn.max_job_size():
                        index, biggest = max(enumerate(bodies), key=lambda b: len(b[1]))
                        if not bulk.any_put and not inflight:
                            raise JobTooBig(too_big(conn, biggest), index)
                        bulk.not_put += [i for p in (part, *todo) for i in p]
                        todo.clear()
                        conn.lock.release()
                        continue  # a server with a smaller limit: the rest is reported
                    conn.use_tube(conf.submission)
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)
                    todo.appendleft(part)
                    conn.lock.release()
                    continue
                except BaseException:
                    conn.lock.release()
                    raise
                sent = self._send_chunk(conn, part, commands, bulk)
                if sent is None:
                    conn.lock.release()
                else:
                    inflight.append(sent)
        finally:
            for sent in inflight:  # only after an unexpected error: give the locks back
                sent.conn.lock.release()
        if unrecorded:
            self._record_chunk(name, ids, bodies, bulk, unrecorded, batch)
        reader = self._reader()
        handles = [None if h is None else Submitted(h[0], h[1], conf.submission, ids[i],
                                                    records=reader)
                   for i, h in enumerate(bulk.handles)]
        if bulk.unknown or bulk.not_put:
            raise SubmitIncomplete(incomplete_message(bulk, self.wait_s), handles,
                                   sorted(bulk.unknown), sorted(bulk.not_put))
        return [h for h in handles if h is not None]

    def _next_ready(self) -> Connection | None:
        with self._lock:
            for _ in range(len(self._conns)):
                conn = self._conns[self._next]
                self._next = (self._next + 1) % len(self._conns)
                if conn.ready():
                    return conn
        return None

    def _send_chunk(self, conn: Connection, part: list[int], commands: list[bytes],
                    bulk: Bulk) -> Inflight | None:
        """Write a chunk's puts at once (the caller holds the connection's lock); None if
        the write failed (the chunk's outcome is then unknown)."""
        sent_at = time.time()
        try:
            conn.send([commands[i] for i in part])
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)  # some of the chunk may have reached the server
            bulk.lost(part, conn.server, sent_at, exc)
            return None
        return Inflight(conn, conn.generation, part, sent_at)

    def _read_chunk(self, sent: Inflight, bulk: Bulk) -> list[int]:
        """Read a written chunk's answers; returns the jobs the server refused (not put:
        they go to another server). Those never answered are unknown."""
        conn, part = sent.conn, sent.part
        answered: list[bytes] = []
        try:
            if conn.generation != sent.generation:  # its connection failed since
                raise ConnectionError("the connection was lost before the answers")
            while len(answered) < len(part):  # in slices: a cut leaves the answered known
                answered += conn.read_lines(min(64, len(part) - len(answered)))
        except CONNECTION_ERRORS as exc:
            if conn.generation == sent.generation:
                conn.failed(exc)
            bulk.lost(part[len(answered):], conn.server, sent.sent_at, exc)
        refused: list[int] = []
        server, handles = conn.server, bulk.handles
        for index, line in zip(part, answered, strict=False):
            if line.startswith((b"INSERTED ", b"BURIED ")):  # BURIED: in, but out of memory
                handles[index] = (int(line.split()[1]), server)
                bulk.any_put = True
            else:
                refused.append(index)
        return refused

    def _record_chunk(self, name: str, ids: list[str | int | None], bodies: list[bytes],
                      bulk: Bulk, part: list[int], batch: str | None) -> None:
        """Records of the jobs `part`: queued ones in one write, unknown ones each."""
        recorder = self.recorder
        if recorder is None:
            return
        queued = [(i, h) for i in part if (h := bulk.handles[i]) is not None]
        keys = {i: record_key(sid) for i in part if (sid := ids[i]) is not None}
        rows = [(keys[i], h[0], h[1].name, bodies[i]) for i, h in queued if i in keys]
        many = getattr(recorder, "record_queued_many", None)
        if rows and many is not None:
            self._records.write(partial(many, name, rows, batch=batch))
        else:
            for sid, job_id, server_name, body in rows:
                self._records.write(partial(recorder.record_queued, sid, name, job_id,
                                            server_name, batch=batch, body=body))
        for i in part:
            lost, key = bulk.lost_at.get(i), keys.get(i)
            if lost is not None and key is not None:
                lost_on, sent_at, reason = lost
                self._records.write(partial(
                    recorder.record_submit_unknown, key, name, lost_on.name,
                    reason, sent_at, batch=batch, body=bodies[i]))

    @property
    def servers(self) -> list[Server]:
        return [conn.server for conn in self._conns]

    def max_job_size(self) -> int | None:
        """The smallest max-job-size of the servers that answer (None: none answers)."""
        sizes = []
        for conn in self._conns:
            if not conn.ready():
                continue
            with conn.lock:
                try:
                    sizes.append(conn.max_job_size())
                except CONNECTION_ERRORS as exc:
                    conn.failed(exc)
        return min(sizes, default=None)

    def _reader(self) -> RecordReader | None:
        return self.recorder if hasattr(self.recorder, "get") else None  # type: ignore[return-value]

    def record(self, submission_id: str | int) -> Any:
        """The submission's record as a public view (records.views.SubmissionView), or None
        if the store has none; needs the producer's records store."""
        from bystroq.records.views import submission_view

        get = getattr(self.recorder, "get", None)
        if get is None:
            raise BystroqError("this producer has no records store to read: pass recorder= "
                               "or set `records:` in the config")
        record = get(record_key(submission_id))
        return None if record is None else submission_view(record)

    def close(self) -> None:
        for conn in self._conns:
            with conn.lock:
                conn.close()
        if self._owned_store is not None:
            self._owned_store.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
