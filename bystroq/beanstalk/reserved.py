"""A job reserved over a connection: every later command for it must go over that
connection, and only while it is still the one that reserved it."""

from __future__ import annotations

from dataclasses import dataclass

from bystroq.beanstalk.connection import Connection
from bystroq.beanstalk.health import Server


@dataclass
class Reserved:
    """A job reserved over `conn`: every later command for it must use `conn`, and only
    while `conn` is still the connection (`generation`) that reserved it."""

    id: int
    body: bytes
    conn: Connection
    generation: int = 0
    priority: int = 2**16

    @property
    def held(self) -> bool:
        """False once the reserving connection was closed (the server released the job)."""
        return self.conn.generation == self.generation and self.conn.connected

    @property
    def server(self) -> Server:
        return self.conn.server
