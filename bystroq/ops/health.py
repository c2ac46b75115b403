"""Whether the servers answer, and the largest job each takes (for the HTTP API's
`/readyz` and its cap on request bodies)."""

from __future__ import annotations

from dataclasses import dataclass

from bystroq.config import LoadedConfig
from bystroq.ops.servers import Unreachable
from bystroq.servers import CONNECTION_ERRORS, Connection, servers_of


@dataclass(frozen=True)
class ServerUp:
    """A server that answered, and its max-job-size."""

    server: str
    max_job_size: int


def server_health(config: LoadedConfig, timeout_s: float = 2.0) -> list[ServerUp | Unreachable]:
    """One row per configured server: up (with its max-job-size) or unreachable."""
    rows: list[ServerUp | Unreachable] = []
    for server in servers_of(config.addresses):
        conn = Connection(server, io_timeout_s=timeout_s)
        try:
            rows.append(ServerUp(conn.server.name, conn.max_job_size()))
        except CONNECTION_ERRORS as exc:
            rows.append(Unreachable(server.name, str(exc) or type(exc).__name__))
        finally:
            conn.close()
    return rows
