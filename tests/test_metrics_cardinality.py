"""Labels stay bounded: 1,000 distinct submission ids through a worker, the consumer and
the HTTP API add no series beyond those the first ten made, and no label carries an id."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from bystroq.config import LoadedConfig
from bystroq.examples.echo import EchoJob
from bystroq.metrics.consumer import ConsumerMetrics
from bystroq.metrics.worker import WorkerCollector
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.producer import Producer
from bystroq.records import open_store
from bystroq.web import WebSettings, create_app
from bystroq.worker import Worker, WorkerOptions
from tests.scrape import Scrape, scrape
from tests.web_server import client, serving


class Watched:
    """A worker's and a consumer's metrics in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.worker = WorkerCollector(self.registry).observer("echo", 1)
        self.consumer = ConsumerMetrics(self.registry)


def _run(config: LoadedConfig, watched: Watched, url: str, first: int, last: int) -> Scrape:
    """Jobs `first`..`last`-1 (every seventh fails) through a worker and the consumer."""
    with Producer(config, recorder=None) as producer:
        producer.submit_many("echo", [
            EchoJob(submissionID=f"card-{i}", fail="no" if i % 7 == 0 else None)
            for i in range(first, last)])
    with Worker(config, "echo", options=WorkerOptions(burst=True,
                                                       observer=watched.worker)) as worker:
        worker.run()
    with (open_store(url) as store,
          ConsumeAndFeed(config, store, observer=watched.consumer) as consumer):
        consumer.drain()
    return Scrape(generate_latest(watched.registry).decode())


def test_a_thousand_ids_add_no_series(config: LoadedConfig, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    watched = Watched()
    early = _run(config, watched, url, 0, 10)
    late = _run(config, watched, url, 10, 1000)
    assert late.total("bystroq_worker_jobs_total") == 1000
    assert late.total("bystroq_consumer_events_total") == 2000
    assert late.series() == early.series()
    assert not [s for s in late.samples if any("card-" in v for v in s.labels.values())]

    with serving(create_app(config, WebSettings(records_url=url))) as base, \
            client(base) as http:
        for i in range(1000):
            assert http.get(f"/v1/submissions/card-{i}").status_code == 200
        for i in range(20):
            assert http.get(f"/nowhere/{i}").status_code == 404
        served = scrape(f"{base}/metrics")
    routes = {(s.labels["route"], s.labels["status"]): s.value for s in served.samples
              if s.name == "bystroq_http_requests_total"}
    assert routes == {("/v1/submissions/{submission_id}", "200"): 1000,
                      ("unmatched", "404"): 20}
