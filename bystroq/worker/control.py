"""The worker's side of its control tube (the requests are in bystroq.control): a thread
that reads them on every server and acts on each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import greenstalk
import msgspec
import structlog

from bystroq.control import CancelRequest, WorkerRequest, control_tube, decode_request
from bystroq.errors import Cancelled
from bystroq.servers import CONNECTION_ERRORS, Connection, Server, ServerHealth, connections


class ControlListener:
    """A thread reading the worker's control tube on every server."""

    def __init__(
        self, servers: Sequence[Server], worker_id: str,
        cancel: Callable[[Server, int, BaseException], bool],
        health: ServerHealth | None = None,
        on_request: Callable[[WorkerRequest], None] | None = None,
    ) -> None:
        self.conns = connections(servers, watch=[control_tube(worker_id)], health=health)
        self.cancel = cancel
        self.on_request = on_request
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bystroq-control", daemon=True)
        self.log = structlog.get_logger("bystroq.control").bind(worker=worker_id)

    def start(self) -> ControlListener:
        self._thread.start()
        return self

    def _run(self) -> None:
        single = len(self.conns) == 1
        while not self._closed.is_set():
            got = False
            for conn in self.conns:
                if not conn.ready():
                    continue
                try:
                    job = conn.client.reserve(1 if single else 0)
                except greenstalk.TimedOutError:
                    continue
                except CONNECTION_ERRORS as exc:
                    if self._closed.is_set():
                        return  # close() cut the connection short
                    conn.failed(exc)
                    continue
                got = True
                self._handle(conn, job)
            if not got and not single:
                self._closed.wait(0.2)
            elif not got and not self.conns[0].ready():
                time.sleep(0.2)

    def _handle(self, conn: Connection, job: greenstalk.Job[bytes]) -> None:
        # Deleted before it is acted on: a stop closes this listener, and a request it
        # could not delete then would be given to the next worker of the same id.
        try:
            conn.client.delete(job)
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)
            return  # released by the server: it comes again
        try:
            request = decode_request(job.body)
        except msgspec.DecodeError as exc:
            self.log.error("malformed control message deleted", error=str(exc))
            return
        if isinstance(request, CancelRequest):
            found = self.cancel(conn.server, request.queueID, Cancelled(request.reason))
            self.log.info("cancel request", queueID=request.queueID,
                          submissionID=request.submissionID, running=found)
        elif self.on_request is not None:
            self.on_request(request)

    def close(self) -> None:
        self._closed.set()
        for conn in self.conns:
            conn.interrupt()  # a reserve waiting on the server returns at once
        if self._thread.is_alive():
            self._thread.join(timeout=3)
        for conn in self.conns:
            conn.close()
