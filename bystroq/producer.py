"""Putting jobs on a category's submission tube, spread over every configured server."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import greenstalk
import msgspec

from bystroq.config import LoadedConfig
from bystroq.errors import JobTooBig
from bystroq.messages import encode, record_key
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    Server,
    connections,
    servers_of,
    wait_for_any,
)

DEFAULT_PRIORITY = 2**16
DEFAULT_WAIT_S = 5.0


@dataclass(frozen=True)
class Submitted:
    """Where a job went: its beanstalkd id (the queueID) on its server and tube."""

    job_id: int
    server: Server
    tube: str
    submission_id: str | int | None


class SubmitRecorder(Protocol):
    """What the producer tells a records store (see bystroq.records)."""

    def record_queued(
        self, submission_id: str, category: str, queue_id: int, server: str,
        batch: str | None = None, at: float | None = None, body: bytes | None = None,
    ) -> Any: ...

    def record_submit_failed(self, submission_id: str, category: str, reason: str) -> Any: ...


class Producer:
    """Submits jobs; thread-safe; one connection per server, used round robin.

    A server that fails is skipped (and retried after a backoff) while others take the
    jobs; only when every server is down for `wait_s` does `submit` raise
    ServersUnavailable.
    """

    def __init__(
        self,
        config: LoadedConfig,
        *,
        wait_s: float = DEFAULT_WAIT_S,
        recorder: SubmitRecorder | None = None,
    ) -> None:
        self.config = config
        self.wait_s = wait_s
        self.recorder = recorder
        self._conns = connections(servers_of(config.addresses))
        for conn in self._conns:
            conn.limit(wait_s)  # a server that stops answering costs one wait, not 30 s
        self._next = 0
        self._lock = threading.Lock()

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
        """Put one job on `category`'s submission tube; return where it went."""
        conf = self.config.category(category)
        body = job if isinstance(job, bytes) else encode(job)
        record = self.recorder is not None
        submission_id = _submission_id(job) if record or not isinstance(job, bytes) else None
        try:
            put = self._put(conf.submission, body, priority, delay, ttr or conf.ttr)
        except Exception as exc:
            if self.recorder is not None and submission_id is not None:
                self.recorder.record_submit_failed(
                    record_key(submission_id), self.config.category_name(category),
                    f"submit failed: {exc}",
                )
            raise
        handle = Submitted(put[0], put[1].server, conf.submission, submission_id)
        if self.recorder is not None and submission_id is not None:
            self.recorder.record_queued(
                record_key(submission_id), self.config.category_name(category), handle.job_id,
                handle.server.name, batch=batch, body=body,
            )
        return handle

    def _put(
        self, tube: str, body: bytes, priority: int, delay: int, ttr: int
    ) -> tuple[int, Connection]:
        deadline = time.monotonic() + self.wait_s
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
                        _bound(conn, deadline - time.monotonic(), self.wait_s)
                        _check_size(conn, body)
                        job_id = conn.use_tube(tube).put(body, priority, delay, ttr)
                        return job_id, conn
                    except greenstalk.JobTooBigError:
                        raise JobTooBig(_too_big(conn, body)) from None
                    except (greenstalk.DrainingError, greenstalk.OutOfMemoryError) as exc:
                        conn.failed(exc)
                    except CONNECTION_ERRORS as exc:
                        conn.failed(exc)
            wait_for_any(self._conns, deadline)

    @property
    def servers(self) -> list[Server]:
        return [conn.server for conn in self._conns]

    def close(self) -> None:
        for conn in self._conns:
            with conn.lock:
                conn.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _submission_id(job: msgspec.Struct | Mapping[str, Any] | bytes) -> str | int | None:
    if isinstance(job, bytes):
        try:
            data = msgspec.json.decode(job)
        except msgspec.DecodeError:
            return None
        return data.get("submissionID") if isinstance(data, dict) else None
    if isinstance(job, Mapping):
        return job.get("submissionID")
    value = getattr(job, "submissionID", None)
    return value if isinstance(value, (str, int)) else None
