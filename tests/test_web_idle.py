"""The idle-time worker, in a real uvicorn with a real beanstalkd: it runs jobs while the
app is idle, stops at the first request (releasing, or finishing, the job it holds), and
only one process on a host runs jobs at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from bystroq.config import LoadedConfig
from bystroq.producer import Producer
from bystroq.testing import wait_until
from bystroq.web import create_router
from bystroq.web.embedded import IdleWorker, pause_reason
from tests.conftest import Tubes
from tests.web_server import client, serving


@contextmanager
def idle_app(config: LoadedConfig, tmp_path: Path, **options: float) -> Iterator[
        tuple[httpx.Client, IdleWorker]]:
    idle = IdleWorker(config, ["echo"], lock_path=tmp_path / "idle.lock",
                      **options)  # type: ignore[arg-type]
    app = FastAPI()
    from bystroq.web import WebSettings

    app.include_router(create_router(config, WebSettings(
        records_url=f"sqlite:///{tmp_path / 'r.db'}")))
    idle.install(app)
    with serving(app) as url, client(url) as http:
        yield http, idle


def _submit(config: LoadedConfig, *jobs: dict[str, object]) -> None:
    with Producer(config) as producer:
        for job in jobs:
            producer.submit("echo", job)


def _events(tubes: Tubes, config: LoadedConfig) -> list[tuple[object, object]]:
    return [(e["submissionID"], e["event"])
            for e in tubes.events(config.category("echo").events)]


def test_pause_reasons() -> None:
    assert pause_reason(1, 60, 0, 5, 0.05) == "1 request(s) in flight"
    assert "ago" in (pause_reason(0, 1, 0, 5, 0.05) or "")
    assert "lag" in (pause_reason(0, 60, 0.2, 5, 0.05) or "")
    assert pause_reason(0, 60, 0.01, 5, 0.05) is None


def test_runs_jobs_while_idle(config: LoadedConfig, tubes: Tubes, tmp_path: Path) -> None:
    tube = config.category("echo").submission
    with idle_app(config, tmp_path, idle_after_s=0.2) as (http, idle):
        _submit(config, *({"submissionID": n} for n in range(3)))  # type: ignore[arg-type]
        wait_until(lambda: tubes.counts(tube)["ready"] == 0
                   and tubes.counts(tube)["reserved"] == 0)
        state = idle.view()
        assert state.running and not state.paused and state.jobs == 3
        assert http.get("/healthz").status_code == 200  # ignored: does not stop it
        assert idle.view().running
    assert [e for e in _events(tubes, config) if e[1] == "completed"] == [
        (0, "completed"), (1, "completed"), (2, "completed")]


def test_a_request_stops_it_and_the_held_job_is_released(
    config: LoadedConfig, tubes: Tubes, tmp_path: Path,
) -> None:
    tube = config.category("echo").submission
    with idle_app(config, tmp_path, idle_after_s=0.5, finish_within_s=0) as (http, _):
        _submit(config, {"submissionID": "long", "sleep_s": 30})
        wait_until(lambda: tubes.counts(tube)["reserved"] == 1)
        state = http.get("/v1/idle-worker").json()
        # The request itself stopped it; the state is read after the stop.
        assert state["paused"] is True and state["reason"] == "a request arrived"
        # Requests keep coming (each poll is one): the job is released, not run again.
        wait_until(lambda: http.get("/v1/idle-worker").json()["running"] is False
                   and tubes.counts(tube)["ready"] == 1)
    events = _events(tubes, config)
    assert ("long", "completed") not in events


def test_a_short_job_finishes_when_a_request_arrives(
    config: LoadedConfig, tubes: Tubes, tmp_path: Path,
) -> None:
    tube = config.category("echo").submission
    with idle_app(config, tmp_path, idle_after_s=0.5, finish_within_s=10) as (http, _):
        _submit(config, {"submissionID": "short", "sleep_s": 0.5})
        wait_until(lambda: tubes.counts(tube)["reserved"] == 1)
        assert http.get("/v1/submissions").status_code == 200
        wait_until(lambda: http.get("/v1/idle-worker").json()["running"] is False)
        assert tubes.counts(tube) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    assert ("short", "completed") in _events(tubes, config)


def test_only_one_process_per_host_runs_jobs(config: LoadedConfig, tubes: Tubes,
                                             tmp_path: Path) -> None:
    tube = config.category("echo").submission
    with idle_app(config, tmp_path, idle_after_s=0.1) as (_, first), \
            idle_app(config, tmp_path, idle_after_s=0.1) as (_, second):
        _submit(config, {"submissionID": "one", "sleep_s": 30})
        wait_until(lambda: tubes.counts(tube)["reserved"] == 1)
        runner, other = (first, second) if first.running else (second, first)
        assert runner.running and not other.running
        wait_until(lambda: other.view().reason is not None
                   and "another process" in other.view().reason)  # type: ignore[operator]
    assert tubes.counts(tube)["ready"] == 1  # released at shutdown, for another worker


def test_event_loop_lag_keeps_it_paused(config: LoadedConfig, tubes: Tubes,
                                        tmp_path: Path) -> None:
    import asyncio
    import time
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    loops: list[asyncio.AbstractEventLoop] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops.append(asyncio.get_running_loop())
        yield

    idle = IdleWorker(config, ["echo"], lock_path=tmp_path / "idle.lock", idle_after_s=0.1,
                      max_lag_s=0.05)
    app = FastAPI(lifespan=lifespan)
    idle.install(app)
    tube = config.category("echo").submission
    with serving(app):
        _submit(config, {"submissionID": "lagged"})

        def busy_loop() -> bool:  # the app's loop blocked 150 ms at a time
            loops[0].call_soon_threadsafe(time.sleep, 0.15)
            reason = idle.view().reason or ""
            return "lag" in reason

        wait_until(busy_loop)
        assert not idle.running and tubes.counts(tube)["ready"] == 1
        wait_until(lambda: tubes.counts(tube)["ready"] == 0)  # no longer blocked: it runs
    assert ("lagged", "completed") in _events(tubes, config)


def test_a_category_that_cannot_start_says_why(server: object, prefix: str,
                                               tmp_path: Path) -> None:
    from bystroq.config import parse
    from bystroq.testing import config_text

    text = config_text([server.address], ["echo"], prefix)  # type: ignore[attr-defined]
    config = parse(text.replace("bystroq.examples.echo", "no_such_module_here"))
    idle = IdleWorker(config, ["echo"], lock_path=tmp_path / "idle.lock", idle_after_s=0.1)
    app = FastAPI()
    idle.install(app)
    with serving(app):
        wait_until(lambda: (idle.view().reason or "").startswith("cannot start"))
        assert not idle.running


def test_its_state_is_behind_the_tokens_when_given(config: LoadedConfig,
                                                   tmp_path: Path) -> None:
    from bystroq.web import WebSettings
    from bystroq.web.settings import parse_tokens

    token = "read-token-0123456789abcdef"
    idle = IdleWorker(config, ["echo"], lock_path=tmp_path / "idle.lock", idle_after_s=60)
    app = FastAPI()
    idle.install(app, WebSettings(tokens=tuple(parse_tokens(f"read:{token}"))))
    with serving(app) as url:
        with client(url) as http:
            assert http.get("/v1/idle-worker").status_code == 401
        with client(url, token=token) as http:
            state = http.get("/v1/idle-worker").json()
    assert state["paused"] is True and state["running"] is False
