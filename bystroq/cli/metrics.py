"""`--metrics-port` and `--metrics-host` of `listen` and `consume`: Prometheus metrics over
prometheus_client's own HTTP server, from a registry of the command's own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bystroq.cli import render
from bystroq.metrics import require

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

F = TypeVar("F", bound=Callable[..., Any])


def metrics_options(command: F) -> F:
    """Add --metrics-port and --metrics-host to a command."""
    command = click.option(
        "--metrics-host", default="127.0.0.1", show_default=True,
        help="Address the metrics endpoint binds.")(command)
    return click.option(
        "--metrics-port", type=click.IntRange(0, 65535),
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: a free port).",
    )(command)


@contextlib.contextmanager
def exported(host: str, port: int | None) -> Iterator[CollectorRegistry | None]:
    """A registry served at host:port while the block runs (with the build info in it);
    None when no port was asked for."""
    if port is None:
        yield None
        return
    require("--metrics-port")
    from prometheus_client import CollectorRegistry

    from bystroq.metrics.build import register_build_info
    from bystroq.metrics.http import serving

    registry = CollectorRegistry()
    register_build_info(registry)
    with serving(registry, host, port) as bound:
        render.echo(f"metrics at http://{host}:{bound}/metrics", err=True)
        yield registry
