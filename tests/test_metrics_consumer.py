"""The events consumer's metrics after known events: applied by event, the apply lag
histogram, malformed events; in process (both stores) and through `bystroq consume
--metrics-port`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from bystroq.config import LoadedConfig
from bystroq.metrics.consumer import ConsumerMetrics
from bystroq.metrics.http import serving
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records import open_store
from bystroq.testing import Beanstalkd, config_for, config_text, free_port, wait_until
from bystroq.worker import Worker, WorkerOptions
from tests.conftest import Tubes
from tests.scrape import Scrape, scrape
from tests.test_metrics_worker import RETRY, put_sequence

APPLIED = "bystroq_consumer_events_total"


def events_of_the_sequence(config: LoadedConfig, tubes: Tubes) -> float:
    """The events of put_sequence's jobs, and one malformed event; when they were put."""
    since = time.time()
    put_sequence(config, tubes)
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    with tubes.client(use=config.category("echo").events) as client:
        client.put(b"this is not an event")
    return since


def check_events(s: Scrape, since: float) -> None:
    applied = {sample.labels["event"]: sample.value for sample in s.samples
               if sample.name == APPLIED and sample.labels["category"] == "echo"}
    assert applied == {"started": 5, "completed": 2, "retrying": 1, "failed": 3}
    assert s.value("bystroq_consumer_apply_lag_seconds_count", category="echo") == 11
    lag = s.value("bystroq_consumer_apply_lag_seconds_sum", category="echo")
    assert 0 <= lag <= 11 * (time.time() - since)
    assert s.value("bystroq_consumer_malformed_total", category="echo") == 1
    assert s.total("bystroq_consumer_store_errors_total") == 0


def test_in_process_consumer_counts_events(server: Beanstalkd, prefix: str, tubes: Tubes,
                                           records_url: str) -> None:
    config = config_for([server.address], prefix=prefix, extra=RETRY)
    since = events_of_the_sequence(config, tubes)
    registry = CollectorRegistry()
    with (open_store(records_url) as store,
          ConsumeAndFeed(config, store, observer=ConsumerMetrics(registry)) as consumer):
        consumer.drain()
        assert consumer.stats.applied == 11 and consumer.stats.malformed == 1
    with serving(registry, "127.0.0.1", 0) as port:
        check_events(scrape(f"http://127.0.0.1:{port}/metrics"), since)


def test_consume_serves_metrics(server: Beanstalkd, prefix: str, tubes: Tubes,
                                tmp_path: Path) -> None:
    config = config_for([server.address], prefix=prefix, extra=RETRY)
    since = events_of_the_sequence(config, tubes)
    config_file = tmp_path / "config.yml"
    config_file.write_text(config_text([server.address], prefix=prefix, extra=RETRY,
                                       records=f"sqlite:///{tmp_path / 'r.db'}"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bystroq", "--config", str(config_file), "consume",
         "--metrics-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    last: list[Scrape] = []

    def applied() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            last[:] = [scrape(url)]
        except httpx.TransportError:
            return False
        return last[0].total(APPLIED) == 11 and last[0].total(
            "bystroq_consumer_malformed_total") == 1

    try:
        wait_until(applied, timeout_s=60)
        check_events(last[0], since)
        assert last[0].value("bystroq_build_info") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_an_event_the_store_refuses_is_a_store_error(config: LoadedConfig, tubes: Tubes,
                                                     tmp_path: Path) -> None:
    registry = CollectorRegistry()
    with open_store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        with store.transaction() as cur:
            cur.execute("CREATE TRIGGER no_poison BEFORE INSERT ON bystroq_records "
                        "WHEN NEW.submission_id = 'poison' "
                        "BEGIN SELECT RAISE(ABORT, 'poison refused'); END")
        with tubes.client(use=config.category("echo").events) as client:
            for sid in ("a", "poison", "b"):
                client.put(b'{"event": "completed", "submissionID": "%s", "at": %f}'
                           % (sid.encode(), time.time()))
        with ConsumeAndFeed(config, store, observer=ConsumerMetrics(registry)) as consumer:
            consumer.drain()
    s = Scrape(generate_latest(registry).decode())
    assert s.value(APPLIED, category="echo", event="completed") == 2
    assert s.value("bystroq_consumer_store_errors_total", category="echo",
                   error="refused") == 1
    assert s.value("bystroq_consumer_apply_lag_seconds_count", category="echo") == 2
