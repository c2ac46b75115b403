"""`--metrics-port`: a registry served by prometheus_client's own HTTP server (a thread)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server

from bystroq.errors import BystroqError


@contextlib.contextmanager
def serving(registry: CollectorRegistry, host: str, port: int) -> Iterator[int]:
    """Serve `registry` at http://host:port/metrics while the block runs; yields the port
    bound (port 0 picks a free one)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise BystroqError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                           "pick another --metrics-port (or --metrics-host)") from None
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
