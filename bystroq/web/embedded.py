"""The idle-time worker: run chosen categories inside the web process while it is idle.

Idle means no request in flight, none for `idle_after_s`, and the event loop's lag under
`max_lag_s`. Then (and only in the one process on this host that holds the lock file) a
bystroq Worker per category runs in a thread of its own, off the event loop, with every
guarantee of a dedicated worker (a job is deleted only after its completed event is
stored). The moment a request arrives it stops reserving; a job it holds then gets
`finish_within_s` to finish (0: released at once for a dedicated worker), like a worker's
drain on SIGTERM. Its state is `GET /v1/idle-worker`.

    idle = IdleWorker(config, ["echo"], idle_after_s=5)
    app = FastAPI()
    app.include_router(create_router(config))
    idle.install(app)                  # the request tracker, the lifespan, the state route

Given the `registry` of the app's `/metrics` (bystroq.web.metrics), its workers' metrics
are served there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import IO, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import CollectorRegistry

from bystroq.config import LoadedConfig
from bystroq.metrics.worker import WorkerCollector
from bystroq.records.views import View
from bystroq.web.auth import authorizer
from bystroq.web.problems import ProblemRoute
from bystroq.web.responses import json_response
from bystroq.web.settings import WebSettings
from bystroq.worker import Worker, WorkerOptions
from bystroq.worker.loop import default_worker_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CHECK_S = 0.05
START_RETRY_S = 5.0


class IdleWorkerView(View, frozen=True):
    """What the idle-time worker does now, and why."""

    categories: list[str]
    running: bool
    paused: bool
    reason: str | None  # why it is paused
    jobs: int  # jobs it ran since the process started
    lag_ms: float


def pause_reason(in_flight: int, quiet_s: float, lag_s: float, idle_after_s: float,
                 max_lag_s: float) -> str | None:
    """Why the worker may not run now (None: it may)."""
    if in_flight:
        return f"{in_flight} request(s) in flight"
    if quiet_s < idle_after_s:
        return f"a request {quiet_s:.1f} s ago (idle after {idle_after_s:g} s)"
    if lag_s > max_lag_s:
        return f"event loop lag {lag_s * 1000:.0f} ms (limit {max_lag_s * 1000:.0f} ms)"
    return None


class HostLock:
    """One holder per host at a time: an exclusive flock on a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def default_lock_path(config: LoadedConfig, categories: Sequence[str]) -> Path:
    """One lock per set of servers and categories, in the temporary folder."""
    key = repr((config.addresses, sorted(categories))).encode()
    return Path(tempfile.gettempdir()) / (
        f"bystroq-idle-{hashlib.sha256(key).hexdigest()[:16]}.lock")


class IdleWorker:
    """Runs `categories` in this web process while it is idle (see the module docstring)."""

    def __init__(self, config: LoadedConfig, categories: Sequence[str], *,
                 idle_after_s: float = 5.0, max_lag_s: float = 0.05,
                 finish_within_s: float = 0.0, lock_path: Path | None = None,
                 ignore_paths: Sequence[str] = ("/healthz", "/readyz", "/metrics"),
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.categories = [config.category_name(c) for c in categories]
        self.idle_after_s, self.max_lag_s = idle_after_s, max_lag_s
        self.finish_within_s = finish_within_s
        self.ignore_paths = frozenset(ignore_paths)
        self.lock = HostLock(lock_path or default_lock_path(config, self.categories))
        self.log = structlog.get_logger("bystroq.web.idle")
        self._in_flight = 0
        self._last_request = time.monotonic()
        self._lag_s = 0.0
        self._workers: list[Worker] = []
        self._threads: list[threading.Thread] = []
        self._jobs = 0
        self._reason: str | None = "not started"
        # Its workers' metrics, in the registry the app's /metrics serves.
        self._metrics = WorkerCollector(registry) if registry is not None else None

    # -- what the app sees ---------------------------------------------------------------

    def install(self, app: FastAPI, settings: WebSettings | None = None) -> None:
        """Track the app's requests, run with its lifespan, serve `/v1/idle-worker`
        (behind the tokens of `settings`, when given)."""
        app.add_middleware(_RequestTracker, idle=self)
        app.include_router(self.router(settings))

    def router(self, settings: WebSettings | None = None) -> APIRouter:
        dependencies = [Depends(authorizer(settings))] if settings is not None else []
        router = APIRouter(route_class=ProblemRoute, lifespan=self._lifespan,
                           tags=["idle worker"], dependencies=dependencies)

        @router.get("/v1/idle-worker", summary="The idle-time worker: running, or why not")
        async def state() -> Response:
            return json_response(self.view())

        return router

    def view(self) -> IdleWorkerView:
        return IdleWorkerView(categories=self.categories, running=self.running,
                              paused=self._reason is not None, reason=self._reason,
                              jobs=self._jobs + sum(sum(w.counts.values())
                                                    for w in self._workers),
                              lag_ms=round(self._lag_s * 1000, 1))

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def request_started(self) -> None:
        self._in_flight += 1
        self._last_request = time.monotonic()
        if self._workers:
            self._stop("a request arrived")

    def request_finished(self) -> None:
        self._in_flight -= 1
        self._last_request = time.monotonic()

    # -- the control loop ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(self._control())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._stop("shutting down")
            await asyncio.get_running_loop().run_in_executor(None, self._join)

    async def _control(self) -> None:
        while True:
            due = time.perf_counter() + CHECK_S
            await asyncio.sleep(CHECK_S)
            self._lag_s = max(0.0, time.perf_counter() - due)
            if self._workers and not self.running:
                await asyncio.get_running_loop().run_in_executor(None, self._join)
            if self._workers:
                continue
            reason = pause_reason(self._in_flight, time.monotonic() - self._last_request,
                                  self._lag_s, self.idle_after_s, self.max_lag_s)
            if reason is None and not self.lock.acquire():
                reason = "another process on this host runs the idle jobs"
            self._reason = reason
            if reason is None:
                try:  # imports the listeners: off the loop
                    workers = await asyncio.get_running_loop().run_in_executor(
                        None, self._workers_for_categories)
                except Exception as exc:
                    self.lock.release()
                    self._reason = f"cannot start: {exc}"
                    self.log.error("idle worker cannot start", error=str(exc))
                    await asyncio.sleep(START_RETRY_S)
                    continue
                if self._in_flight or time.monotonic() - self._last_request < (
                        self.idle_after_s):  # a request came meanwhile
                    for worker in workers:
                        worker.close()
                    self.lock.release()
                    continue
                self._start(workers)

    def _workers_for_categories(self) -> list[Worker]:
        metrics = self._metrics
        # One id a category: each has its own control tube and its own line in the
        # live-workers list.
        return [Worker(self.config, category, options=WorkerOptions(
            concurrency=1, drain_timeout_s=self.finish_within_s,
            worker_id=default_worker_id(f"idle-{category}"),
            observer=metrics.observer(category, 1) if metrics is not None else None))
            for category in self.categories]

    def _start(self, workers: list[Worker]) -> None:
        self.log.info("idle: running jobs", categories=self.categories)
        for category, worker in zip(self.categories, workers, strict=True):
            thread = threading.Thread(target=worker.run, name=f"bystroq-idle-{category}",
                                      daemon=True)
            self._workers.append(worker)
            self._threads.append(thread)
            thread.start()

    def _stop(self, why: str) -> None:
        self._reason = why
        for worker in self._workers:
            worker.stop(self.finish_within_s)

    def _join(self) -> None:
        """Wait for the stopped workers (they finish or release their jobs), then let
        another process run."""
        for thread in self._threads:
            thread.join()
        self._jobs += sum(sum(w.counts.values()) for w in self._workers)
        self._workers, self._threads = [], []
        self.lock.release()


class _RequestTracker:
    """ASGI middleware: tells the idle worker when requests start and end."""

    def __init__(self, app: ASGIApp, idle: IdleWorker) -> None:
        self.app, self.idle = app, idle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get(
                "path") in self.idle.ignore_paths:
            await self.app(scope, receive, send)
            return
        self.idle.request_started()
        try:
            await self.app(scope, receive, send)
        finally:
            self.idle.request_finished()
