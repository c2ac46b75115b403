"""Putting jobs on a category's submission tube, spread over every configured server."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import greenstalk
import msgspec
import structlog

from bystroq.config import LoadedConfig
from bystroq.errors import (
    BystroqError,
    JobTooBig,
    ServersUnavailable,
    SubmitIncomplete,
    SubmitOutcomeUnknown,
)
from bystroq.messages import encode, record_key
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

DEFAULT_PRIORITY = 2**16
DEFAULT_WAIT_S = 5.0
# Puts written at once by submit_many: large enough that a round trip is shared by many
# jobs, small enough that a cut connection leaves few outcomes unknown.
SUBMIT_CHUNK = 256
# Queued records submit_many writes in one transaction.
RECORD_BATCH = 2048


class RecordReader(Protocol):
    """A records store, as far as a handle reads it."""

    def get(self, submission_id: str) -> Any: ...


@dataclass(frozen=True)
class Submitted:
    """Where a job went: its beanstalkd id (the queueID) on its server and tube."""

    job_id: int
    server: Server
    tube: str
    submission_id: str | int | None
    records: RecordReader | None = field(default=None, compare=False, repr=False)

    def wait(self, timeout_s: float = 60.0, poll_s: float = 0.1) -> Any:
        """The submission's record (a records.views.SubmissionView) once it is completed,
        failed or cancelled; TimeoutError after `timeout_s`. Needs a records store (the
        producer's) and a consumer applying events to it."""
        from bystroq.records.model import FINAL_STATES
        from bystroq.records.views import submission_view

        if self.records is None or self.submission_id is None:
            raise BystroqError("this job has no record to wait for: give the Producer a "
                               "records store (recorder=, or `records:` in the config) "
                               "and the job a submissionID")
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.records.get(record_key(self.submission_id))
            if record is not None and record.state in FINAL_STATES:
                return submission_view(record)
            if time.monotonic() >= deadline:
                state = record.state if record is not None else "not recorded yet"
                raise TimeoutError(f"submission {self.submission_id!r} is still {state} "
                                   f"after {timeout_s} s")
            time.sleep(poll_s)


class FromConfig:
    """The default recorder: the config's `records:` store, if it names one."""


FROM_CONFIG = FromConfig()


class SubmitRecorder(Protocol):
    """What the producer tells a records store (see bystroq.records)."""

    def record_queued(
        self, submission_id: str, category: str, queue_id: int, server: str,
        batch: str | None = None, at: float | None = None, body: bytes | None = None,
    ) -> Any: ...

    def record_submit_failed(self, submission_id: str, category: str, reason: str) -> Any: ...

    def record_submit_unknown(
        self, submission_id: str, category: str, server: str, reason: str, sent_at: float,
        batch: str | None = None, body: bytes | None = None,
    ) -> Any: ...


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
        self._records = _RecorderHealth(recorder)

    def submit(
        self,
        category: str,
        job: msgspec.Struct | Mapping[str, Any] | bytes,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int | None = None,
        batch: str | None = None,
    ) -> Submitted:
        """Put one job on `category`'s submission tube; return where it went.

        Raises ServersUnavailable or JobTooBig when the job was not put (submitting it
        again is safe), SubmitOutcomeUnknown when it may have been (do not submit it again;
        its record, state `unknown`, follows the job's events if it arrives).
        """
        conf = self.config.category(category)
        body = job if isinstance(job, bytes) else encode(job, self.config.config.wire)
        record = self.recorder is not None
        submission_id = _submission_id(job) if record or not isinstance(job, bytes) else None
        name = self.config.category_name(category)
        sid = None if submission_id is None else record_key(submission_id)
        recorder = self.recorder if sid is not None else None
        try:
            job_id, conn = self._put(conf.submission, body, priority, delay, ttr or conf.ttr)
        except _NoAnswer as lost:
            error = SubmitOutcomeUnknown(_unknown_message(lost, submission_id, self.wait_s))
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
        the server's answer tells, and no answer raises _NoAnswer."""
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
                        _drop_if_closed(conn)
                        _bound(conn, deadline - time.monotonic(), self.wait_s)
                        _check_size(conn, body)
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
                        raise _NoAnswer(conn.server, sent_at, exc) from exc
                    try:
                        expect(reply, b"INSERTED")
                        return int(reply[1][0]), conn
                    except greenstalk.JobTooBigError:
                        raise JobTooBig(_too_big(conn, body)) from None
                    except (greenstalk.DrainingError, greenstalk.OutOfMemoryError) as exc:
                        conn.failed(exc)  # the server refused it: nothing was put
            wait_for_any(self._conns, deadline)

    def submit_many(
        self,
        category: str,
        jobs: Sequence[msgspec.Struct | Mapping[str, Any] | bytes],
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int | None = None,
        batch: str | None = None,
        chunk: int = SUBMIT_CHUNK,
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
        bodies = [job if isinstance(job, bytes) else encode(job) for job in jobs]
        record = self.recorder is not None
        ids = [_submission_id(job) if record or not isinstance(job, bytes) else None
               for job in jobs]
        commands = [put_command(body, priority, delay, ttr or conf.ttr) for body in bodies]
        bulk = _Bulk(len(jobs))
        longest = max(map(len, bodies), default=0)
        todo = deque(list(range(start, min(len(jobs), start + chunk)))
                     for start in range(0, len(jobs), chunk))
        deadline = time.monotonic() + self.wait_s
        unrecorded: list[int] = []  # jobs whose records are written together
        # Chunks written and not yet answered (at most two: the server works on the next
        # while the answers to the last are read); each holds its connection's lock.
        inflight: deque[_Inflight] = deque()

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
                        _drop_if_closed(conn)
                    _bound(conn, deadline - time.monotonic(), self.wait_s)
                    if longest > conn.max_job_size():
                        index, biggest = max(enumerate(bodies), key=lambda b: len(b[1]))
                        if not bulk.any_put and not inflight:
                            raise JobTooBig(_too_big(conn, biggest), index)
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
            raise SubmitIncomplete(_incomplete_message(bulk, self.wait_s), handles,
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
                    bulk: _Bulk) -> _Inflight | None:
        """Write a chunk's puts at once (the caller holds the connection's lock); None if
        the write failed (the chunk's outcome is then unknown)."""
        sent_at = time.time()
        try:
            conn.send([commands[i] for i in part])
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)  # some of the chunk may have reached the server
            bulk.lost(part, conn.server, sent_at, exc)
            return None
        return _Inflight(conn, conn.generation, part, sent_at)

    def _read_chunk(self, sent: _Inflight, bulk: _Bulk) -> list[int]:
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
                      bulk: _Bulk, part: list[int], batch: str | None) -> None:
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


@dataclass
class _Inflight:
    """A chunk of puts written over `conn` (in its `generation`) and not yet answered."""

    conn: Connection
    generation: int
    part: list[int]
    sent_at: float


class _Bulk:
    """Where each job of a bulk submit stands."""

    def __init__(self, count: int) -> None:
        self.handles: list[tuple[int, Server] | None] = [None] * count
        self.unknown: list[int] = []
        self.not_put: list[int] = []
        self.lost_at: dict[int, tuple[Server, float, str]] = {}
        self.any_put = False

    def lost(self, indices: list[int], server: Server, sent_at: float,
             error: BaseException) -> None:
        reason = (f"{server} did not answer a bulk put within the wait "
                  f"({str(error) or type(error).__name__}); it may still run: do not submit "
                  f"it again")
        self.unknown += indices
        for index in indices:
            self.lost_at[index] = (server, sent_at, reason)


def _incomplete_message(bulk: _Bulk, wait_s: float) -> str:
    done = sum(h is not None for h in bulk.handles)
    parts = [f"{done} of {len(bulk.handles)} jobs were submitted"]
    if bulk.unknown:
        parts.append(f"{len(bulk.unknown)} were sent and never answered (outcome unknown: do "
                     f"not submit them again; their records say unknown)")
    if bulk.not_put:
        parts.append(f"{len(bulk.not_put)} were not put (no server took them within "
                     f"{wait_s:g} s; submitting those again is safe)")
    return "; ".join(parts)


class _NoAnswer(Exception):
    """A put was sent to `server` at `sent_at` (wall clock) and never answered."""

    def __init__(self, server: Server, sent_at: float, error: BaseException) -> None:
        super().__init__(f"{server}: {error}")
        self.server, self.sent_at, self.error = server, sent_at, error


def _unknown_message(lost: _NoAnswer, submission_id: str | int | None, wait_s: float) -> str:
    what = "the job" if submission_id is None else f"submission {submission_id!r}"
    error = str(lost.error) or type(lost.error).__name__
    return (
        f"{lost.server} did not answer the put of {what} within {wait_s:g} s ({error}); it "
        f"may still run: do not submit it again, follow its record (state unknown) or events"
    )


class _RecorderHealth:
    """Writes to the records store without ever failing a submit: the job is in (or its
    put's own error is raised) whatever the store does. An outage is logged once when it
    starts and once when it ends, not once per job; records missed meanwhile are created
    by the events consumer from the jobs' events."""

    def __init__(self, recorder: SubmitRecorder | None) -> None:
        self.store = getattr(recorder, "url", type(recorder).__name__)  # for the log
        self._down_since: float | None = None
        self._missed = 0
        self._lock = threading.Lock()
        self.log = structlog.get_logger("bystroq.producer")

    def write(self, record: Callable[[], object]) -> None:
        """Call `record` (one write to the store); whatever it raises is logged."""
        try:
            record()
        except Exception as exc:
            self._failed(exc)
        else:
            self._succeeded()

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
            self._missed += 1
        if first:
            self.log.warning(
                "records store unavailable: jobs are still put and their records will be "
                "written by the events consumer; check the database",
                store=self.store,
                error=str(exc) or type(exc).__name__)

    def _succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, missed = self._down_since, self._missed
            self._down_since, self._missed = None, 0
        if since is not None:
            self.log.info("records store available again", down_s=round(
                time.monotonic() - since, 3), records_missed=missed)


def _drop_if_closed(conn: Connection) -> None:
    """Close a connection the server closed since its last command (it restarted or went
    away), so the put goes over a fresh one: a put sent on a dead connection would get
    no answer, and its outcome would look unknown when it is known (not put)."""
    if conn.closed_by_server():
        conn.close()


def _bound(conn: Connection, remaining_s: float, wait_s: float) -> None:
    """Keep a put within the caller's deadline; the socket's timeout is changed (two
    system calls) only when it is off by more than a tenth of the wait, i.e. after a
    server failed within this submit, not on every put."""
    current = conn._limit_s or wait_s
    if abs(current - remaining_s) > wait_s / 10:
        conn.limit(remaining_s)


def _check_size(conn: Connection, body: bytes) -> None:
    if len(body) > conn.max_job_size():
        raise JobTooBig(_too_big(conn, body))


def _too_big(conn: Connection, body: bytes) -> str:
    return (
        f"job body is {len(body)} bytes, over {conn.server}'s max-job-size of "
        f"{conn.max_job_size()} bytes; pass large data by reference (a path or URL) "
        f"or start beanstalkd with a larger -z"
    )


def _either_id(data: Mapping[str, Any]) -> str | int | None:
    """The submission id in either spelling of the wire."""
    value = data.get("submissionID", data.get("submissionId"))
    return value if isinstance(value, str | int) else None


def _submission_id(job: msgspec.Struct | Mapping[str, Any] | bytes) -> str | int | None:
    if isinstance(job, bytes):
        try:
            data = msgspec.json.decode(job)
        except msgspec.DecodeError:
            return None
        return _either_id(data) if isinstance(data, dict) else None
    if isinstance(job, Mapping):
        return _either_id(job)
    value = getattr(job, "submissionID", None)
    return value if isinstance(value, (str, int)) else None
