"""Acting on one tube on every server: pause and resume, purge, and one buried job kicked
or deleted (the rest of tube control is bystroq.ops.servers)."""

from __future__ import annotations

import greenstalk

from bystroq.config import LoadedConfig
from bystroq.ops.servers import Unreachable, on_each_server
from bystroq.servers import Server, servers_of


class NotBuried(Exception):
    """The job is not a buried job of that server (gone, or in another state)."""


def server_names(config: LoadedConfig) -> list[str]:
    return [server.name for server in servers_of(config.addresses)]


def _per_server(config: LoadedConfig, rows: list[int | Unreachable]
                ) -> dict[str, int | Unreachable]:
    return dict(zip(server_names(config), rows, strict=True))


def pause(config: LoadedConfig, tube: str, seconds: int) -> dict[str, int | Unreachable]:
    """Pause `tube` for `seconds` (0: resume) on each server: 1 where it was paused, 0
    where the server has no such tube yet (no job, no watcher)."""
    def one(server: Server, client: greenstalk.Client[bytes]) -> int:
        try:
            client.pause_tube(tube, seconds)
        except greenstalk.NotFoundError:
            return 0
        return 1

    return _per_server(config, on_each_server(config, tube, one))


def purge(config: LoadedConfig, tube: str) -> dict[str, int | Unreachable]:
    """Delete every ready, delayed and buried job of `tube` on each server; how many."""
    def one(server: Server, client: greenstalk.Client[bytes]) -> int:
        count = 0
        for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
            while True:
                try:
                    client.delete(peek())
                except greenstalk.NotFoundError:
                    break
                count += 1
        return count

    return _per_server(config, on_each_server(config, tube, one))


def act_on_buried(config: LoadedConfig, tube: str, server: str, queue_id: int,
                  delete: bool) -> int | Unreachable:
    """Kick (or delete) buried job `queue_id` of `tube` on `server`; NotBuried if it is
    not one; KeyError if `server` is not configured."""
    if server not in server_names(config):
        raise KeyError(server)

    def one(s: Server, client: greenstalk.Client[bytes]) -> int:
        if s.name != server:
            return 0
        try:
            if client.stats_job(queue_id)["tube"] != tube or client.stats_job(
                    queue_id)["state"] != "buried":
                raise NotBuried(queue_id)
            if delete:
                client.delete(queue_id)
            else:
                client.kick_job(queue_id)
        except greenstalk.NotFoundError:
            raise NotBuried(queue_id) from None
        return 1

    rows = _per_server(config, on_each_server(config, tube, one))
    return rows[server]
