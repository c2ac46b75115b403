"""`bystroq serve`'s /metrics against a real uvicorn, beanstalkd and both stores: requests
by route template, beanstalkd gauges equal to `stats`, submissions and batches by state
equal to the store's counts, tokens; an idle worker's metrics on the same endpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from bystroq import __version__
from bystroq.config import LoadedConfig
from bystroq.metrics.beanstalkd import BeanstalkdCollector
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.ops.servers import TubeStats, tube_stats
from bystroq.ops.tubes import pause
from bystroq.records import open_store
from bystroq.records.model import STATES
from bystroq.testing import Beanstalkd, config_for, free_port, wait_until
from bystroq.web import WebSettings, create_app, create_router
from bystroq.web.embedded import IdleWorker
from bystroq.web.metrics import install_request_metrics
from bystroq.web.settings import Token
from bystroq.worker import Worker, WorkerOptions
from tests.conftest import Tubes
from tests.scrape import Scrape, scrape
from tests.test_metrics_worker import RETRY, put_sequence
from tests.web_server import client, serving

READ, WRITE = "r" * 32, "w" * 32


def test_serve_metrics_match_stats_and_the_store(server: Beanstalkd, prefix: str,
                                                 records_url: str, tubes: Tubes) -> None:
    config = config_for([server.address], prefix=prefix, extra=RETRY, records=records_url)
    put_sequence(config, tubes)  # queued records for all but the invalid job
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with open_store(records_url) as store, ConsumeAndFeed(config, store) as consumer:
        consumer.drain()
    settings = replace(WebSettings.from_config(config, environ={}), tokens=(
        Token(READ, "read", "grafana"), Token(WRITE, "write", "backend")))
    annotation = config.category("annotation").submission
    with serving(create_app(config, settings)) as url, tubes.client(use=annotation) as direct:
        with client(url, WRITE) as http:
            created = http.post("/v1/batches", json={
                "category": "annotation", "records": [{"inputFilePath": "/x",
                                                       "outputBasePath": "/y"}]})
            assert created.status_code == 201, created.text
            for _ in range(2):
                assert http.get("/v1/submissions/ok-1").status_code == 200
            assert http.get("/v1/submissions/nobody").status_code == 404
        with client(url) as anonymous:
            assert anonymous.get("/metrics").status_code == 401
        direct.put(b"{}", delay=3600)  # the tube exists while it holds a job
        pause(config, annotation, 60)
        s, rows, by_state = _scrape_all(url, config, records_url)

    # beanstalkd: every configured tube, equal to what `bystroq stats` reads.
    assert s.value("bystroq_beanstalkd_up", server=server.address) == 1
    assert len(rows) == 4
    for row in rows:
        labels = {"server": row.server, "tube": row.tube}
        for state in ("ready", "reserved", "delayed", "buried"):
            assert s.value("bystroq_beanstalkd_jobs", **labels, state=state) == getattr(
                row, state), (row, state)
        assert s.value("bystroq_beanstalkd_watchers", **labels) == row.watching
        assert s.value("bystroq_beanstalkd_waiting", **labels) == row.waiting
        assert s.value("bystroq_beanstalkd_urgent_jobs", **labels) == row.urgent
        assert s.value("bystroq_beanstalkd_jobs_created_total", **labels) == row.total
    echo = {"server": server.address, "tube": config.category("echo").submission}
    assert s.value("bystroq_beanstalkd_jobs", **echo, state="buried") == 3
    assert s.value("bystroq_beanstalkd_jobs", **echo, category="echo", kind="submission",
                   state="buried") == 3
    events = {"server": server.address, "tube": config.category("echo").events}
    assert s.value("bystroq_beanstalkd_jobs", **events, kind="events", state="ready") == 0
    assert s.value("bystroq_beanstalkd_jobs_created_total", **echo) == 5  # puts only
    assert s.value("bystroq_beanstalkd_paused", tube=annotation) == 1
    assert s.value("bystroq_beanstalkd_paused", **echo) == 0
    assert s.value("bystroq_beanstalkd_jobs", tube=annotation, state="delayed") == 1

    # The store: every state, equal to the store's own counts.
    assert by_state["completed"] == 2 and by_state["failed"] == 3  # the invalid one's, too
    assert {k: v for k, v in by_state.items() if v} == {
        sample.labels["state"]: sample.value for sample in s.samples
        if sample.name == "bystroq_submissions" and sample.value}
    assert {sample.labels["state"] for sample in s.samples
            if sample.name == "bystroq_submissions"} == set(STATES)
    assert s.value("bystroq_batches", state="running") == 1
    assert s.value("bystroq_batches", state="completed") == 0
    assert s.value("bystroq_store_up") == 1

    # Requests, by route template.
    template = "/v1/submissions/{submission_id}"
    assert s.value("bystroq_http_requests_total", route=template, method="GET",
                   status="200") == 2
    assert s.value("bystroq_http_requests_total", route=template, method="GET",
                   status="404") == 1
    assert s.value("bystroq_http_requests_total", route="/v1/batches", method="POST",
                   status="201") == 1
    assert s.value("bystroq_http_requests_total", route="/metrics", method="GET",
                   status="401") == 1
    assert s.value("bystroq_http_request_duration_seconds_count", route=template,
                   method="GET") == 3
    assert s.value("bystroq_build_info", version=__version__) == 1


def _scrape_all(url: str, config: LoadedConfig, records_url: str) -> tuple[
        Scrape, list[TubeStats], dict[str, int]]:
    """/metrics, what `bystroq stats` reads, and the store's counts, one after another."""
    s = scrape(f"{url}/metrics", READ)
    rows = [r for r in tube_stats(config) if isinstance(r, TubeStats)]
    with open_store(records_url) as store:
        return s, rows, store.count_by_state()


def test_a_server_that_does_not_answer_is_down(server: Beanstalkd, prefix: str) -> None:
    down = f"127.0.0.1:{free_port()}"
    config = config_for([server.address, down], prefix=prefix)
    registry = CollectorRegistry()
    registry.register(BeanstalkdCollector(config))
    s = Scrape(generate_latest(registry).decode())
    assert s.value("bystroq_beanstalkd_up", server=server.address) == 1
    assert s.value("bystroq_beanstalkd_up", server=down) == 0
    assert {sample.labels["server"] for sample in s.samples
            if sample.name == "bystroq_beanstalkd_jobs"} == {server.address}


def test_the_idle_worker_reports_on_the_apps_metrics(config: LoadedConfig, tubes: Tubes,
                                                     tmp_path: Path) -> None:
    registry = CollectorRegistry()
    app = FastAPI()
    install_request_metrics(app, registry)
    app.include_router(create_router(config, WebSettings(
        records_url=f"sqlite:///{tmp_path / 'r.db'}"), metrics=registry))
    IdleWorker(config, ["echo"], idle_after_s=0.2, lock_path=tmp_path / "idle.lock",
               registry=registry).install(app)
    with serving(app) as url:
        put_sequence(config, tubes)  # without a retry policy: the RuntimeError fails at once
        last: list[Scrape] = []

        def done() -> bool:
            last[:] = [scrape(f"{url}/metrics")]
            return last[0].total("bystroq_worker_jobs_total", category="echo") == 5

        wait_until(done, timeout_s=30)
    jobs = {sample.labels["outcome"]: sample.value for sample in last[0].samples
            if sample.name == "bystroq_worker_jobs_total" and sample.value}
    assert jobs == {"completed": 2, "failed": 2, "invalid": 1}
    assert last[0].value("bystroq_worker_buried_total", category="echo") == 3
    assert last[0].value("bystroq_worker_slots", category="echo") == 1
