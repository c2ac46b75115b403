"""beanstalkd as `bystroq serve` sees it, read at scrape time: each configured tube on each
server (jobs by state, urgent, watchers, waiting connections, paused, jobs created) and
whether each server answered. Labels: server, tube, and the tube's category and kind
(submission or events), all from the config, so their number is bounded."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bystroq.config import LoadedConfig
from bystroq.ops.servers import TubeStats, tube_stats

TUBE_LABELS = ["server", "tube", "category", "kind"]
STATES = ("ready", "reserved", "delayed", "buried")


class BeanstalkdCollector(Collector):
    """Asks every server for its tubes' stats at each scrape (one connection a server)."""

    def __init__(self, config: LoadedConfig) -> None:
        self.config = config
        self.tubes: dict[str, tuple[str, str]] = {}  # tube -> (category, kind)
        for category, conf in config.config.beanstalkd.tubes.items():
            self.tubes[conf.submission] = (category, "submission")
            self.tubes[conf.events] = (category, "events")

    def describe(self) -> Iterator[Metric]:
        return iter(_families())  # registering must not connect to the servers

    def collect(self) -> Iterator[Metric]:
        up, jobs, urgent, watchers, waiting, paused, created = families = _families()
        rows = tube_stats(self.config, list(self.tubes))
        answered = {row.server for row in rows if isinstance(row, TubeStats)}
        for server in dict.fromkeys(row.server for row in rows):
            up.add_metric([server], 1 if server in answered else 0)
        for row in rows:
            if not isinstance(row, TubeStats):
                continue
            labels = [row.server, row.tube, *self.tubes.get(row.tube, ("", ""))]
            for state in STATES:
                jobs.add_metric([*labels, state], getattr(row, state))
            urgent.add_metric(labels, row.urgent)
            watchers.add_metric(labels, row.watching)
            waiting.add_metric(labels, row.waiting)
            paused.add_metric(labels, 1 if row.paused else 0)
            created.add_metric(labels, row.total)
        return iter(families)


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily,
                         GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily,
                         CounterMetricFamily]:
    return (
        GaugeMetricFamily("bystroq_beanstalkd_up", "1 if the server answered this scrape",
                          labels=["server"]),
        GaugeMetricFamily("bystroq_beanstalkd_jobs", "Jobs of a tube by state",
                          labels=[*TUBE_LABELS, "state"]),
        GaugeMetricFamily("bystroq_beanstalkd_urgent_jobs",
                          "Ready jobs of a tube with priority under 1024", labels=TUBE_LABELS),
        GaugeMetricFamily("bystroq_beanstalkd_watchers",
                          "Connections watching a tube (a worker has one per slot)",
                          labels=TUBE_LABELS),
        GaugeMetricFamily("bystroq_beanstalkd_waiting",
                          "Connections waiting in a reserve on a tube", labels=TUBE_LABELS),
        GaugeMetricFamily("bystroq_beanstalkd_paused", "1 while a tube is paused",
                          labels=TUBE_LABELS),
        CounterMetricFamily("bystroq_beanstalkd_jobs_created",
                            "Jobs put on a tube since the server started", labels=TUBE_LABELS),
    )
