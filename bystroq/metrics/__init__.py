"""Prometheus metrics (extra `metrics`, also in `web`): what workers, the events consumer
and `bystroq serve` export, each into a `CollectorRegistry` its caller owns (never the
global one).

- `bystroq.metrics.worker`: a worker's jobs (WorkerCollector; its observers are what a
  Worker is given as `WorkerOptions(observer=...)`);
- `bystroq.metrics.consumer`: the events consumer (ConsumerMetrics, a ConsumerObserver);
- `bystroq.metrics.build`: `bystroq_build_info`;
- `bystroq.metrics.beanstalkd`: tubes per server, read at scrape time;
- `bystroq.metrics.store`: submissions and batches by state, read at scrape time;
- `bystroq.metrics.http`: prometheus_client's own HTTP server for `--metrics-port`.

Importing this package needs nothing; `require()` says what to install when
prometheus_client is missing.
"""

from __future__ import annotations

from bystroq.errors import BystroqError


def require(what: str) -> None:
    """Raise a one-line BystroqError naming `what` if prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise BystroqError(f"{what} needs prometheus_client: pip install 'bystroq[metrics]'"
                           ) from None
