"""contrib/: the Grafana dashboard and the Prometheus alert rules parse, and every metric
they name is one bystroq exports (the names the real collectors register)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from ruamel.yaml import YAML

from bystroq.config import LoadedConfig
from bystroq.metrics.beanstalkd import BeanstalkdCollector
from bystroq.metrics.build import register_build_info
from bystroq.metrics.consumer import ConsumerMetrics
from bystroq.metrics.store import StoreCollector
from bystroq.metrics.worker import WorkerCollector
from bystroq.web.metrics import RequestMetrics

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
METRIC = re.compile(r"\bbystroq_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
            "histogram": ("_bucket", "_count", "_sum", "_created")}


def _families(config: LoadedConfig) -> Iterator[Metric]:
    """Every family the worker, the consumer and `bystroq serve` export."""
    registry = CollectorRegistry()
    WorkerCollector(registry)
    ConsumerMetrics(registry)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    RequestMetrics(app, registry)
    register_build_info(registry)
    yield from registry.collect()
    yield from BeanstalkdCollector(config).describe()  # describing connects to nothing
    yield from StoreCollector(lambda: None).describe()  # type: ignore[arg-type,return-value]


def exported(config: LoadedConfig) -> set[str]:
    """The sample names a scrape can show."""
    return {family.name + suffix for family in _families(config)
            for suffix in SUFFIXES[family.type]}


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_the_exported_names_are_what_the_readme_lists(config: LoadedConfig) -> None:
    names = exported(config)
    assert "bystroq_worker_jobs_total" in names and "bystroq_beanstalkd_up" in names
    readme = (CONTRIB.parent / "README.md").read_text()
    section = readme[readme.index("### Metrics"):]
    listed = set(re.findall(r"`(bystroq_[a-z0-9_]+)`", section))
    families = {family.name + ("_total" if family.type == "counter" else
                               "_info" if family.type == "info" else "")
                for family in _families(config)}
    assert families <= listed, f"not in the README: {sorted(families - listed)}"


def test_the_dashboard_uses_only_exported_metrics(config: LoadedConfig) -> None:
    dashboard = json.loads((CONTRIB / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20 and all(p["targets"] and p["datasource"] for p in panels)
    used = {name for text in _strings(dashboard) for name in METRIC.findall(text)}
    assert len(used) >= 20
    assert used <= exported(config), sorted(used - exported(config))


def test_the_alert_rules_use_only_exported_metrics(config: LoadedConfig) -> None:
    doc = YAML(typ="safe").load((CONTRIB / "prometheus-alerts.yml").read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    alerts = {rule["alert"] for rule in rules}
    assert {"BystroqTubeUnwatched", "BystroqNoWorker", "BystroqBuriedGrowing",
            "BystroqConsumerLag"} <= alerts
    for rule in rules:
        assert rule["expr"].strip() and rule["labels"]["severity"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    used = {name for rule in rules for name in METRIC.findall(rule["expr"])}
    assert used <= exported(config), sorted(used - exported(config))
    lag = next(rule for rule in rules if rule["alert"] == "BystroqConsumerLag")
    assert "bystroq_consumer_apply_lag_seconds_bucket" in lag["expr"] and "> 60" in lag["expr"]
