"""`bystroq_build_info`: which bystroq exports the metrics (on every endpoint)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Info

from bystroq import __version__


def register_build_info(registry: CollectorRegistry) -> None:
    """`bystroq_build_info{version}` 1, in `registry`."""
    Info("bystroq_build", "The bystroq version that exports these metrics",
         registry=registry).info({"version": __version__})
