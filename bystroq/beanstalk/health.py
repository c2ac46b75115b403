"""Servers by name, and what a process knows of their health: backoff after a failure, and
one log line per change of a server's state (not one per connection or per retry).

A server is named by the address its connection actually reached (`127.0.0.1:11300`,
`[::1]:11300`), not by how a config spells it: `localhost:11300` and `127.0.0.1:11300` are
one server, so records written by a producer match events read by a consumer. The name
stays the same across a server restart on the same address (beanstalkd's own `id` does
not, while a binlog keeps its jobs and their ids). Every process must therefore reach a
server at the same IP: on the server's own machine, configure its network address rather
than 127.0.0.1 if processes elsewhere use that.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog


@dataclass(frozen=True, order=True)
class Server:
    """One beanstalkd server's address."""

    host: str
    port: int

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.name


def peer_of(sock: socket.socket) -> Server:
    """The server a connected socket reached, by its IP address in canonical form (an
    IPv4-mapped IPv6 address as IPv4), so that every spelling of one server has one name."""
    host, port = sock.getpeername()[:2]
    try:
        ip = ipaddress.ip_address(host)  # a link-local address keeps its %scope
    except ValueError:  # not an IP socket (e.g. a test's socket pair): keep what it says
        return Server(str(host), int(port))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return Server(str(ip), int(port))


def servers_of(addresses: Iterable[tuple[str, int]]) -> list[Server]:
    """Server objects for (host, port) pairs."""
    return [Server(host, port) for host, port in addresses]


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter."""

    base_s: float = 0.1
    cap_s: float = 5.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


class ServerHealth:
    """Which servers are down, shared by a process's connections: a change of state is
    logged once per server, not once per connection or per retry."""

    def __init__(self) -> None:
        self._down: dict[Server, float] = {}
        self._lock = threading.Lock()
        self.log = structlog.get_logger("bystroq.servers")

    def down(self, server: Server, exc: BaseException) -> None:
        with self._lock:
            if server in self._down:
                return
            self._down[server] = time.monotonic()
        self.log.warning("server unreachable", server=server.name,
                         error=str(exc) or type(exc).__name__)

    def up(self, server: Server) -> None:
        with self._lock:
            since = self._down.pop(server, None)
        if since is not None:
            self.log.info("server reconnected", server=server.name,
                          down_s=round(time.monotonic() - since, 3))


class ServerDown(ConnectionError):
    """The server is in its backoff window after a failure; try again later."""


