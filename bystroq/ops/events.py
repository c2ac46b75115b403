"""Watching events without taking them: read what the consumer applied (the store's event
log), so a watcher never steals a consumer's events. Reading the events tube itself (and
so consuming it) is `servers.follow_events`, an explicit choice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import greenstalk

from bystroq.config import LoadedConfig
from bystroq.records import feeds
from bystroq.records.sql import SQLStore
from bystroq.records.store import Store
from bystroq.servers import CONNECTION_ERRORS, Connection, servers_of

POLL_S = 0.2


def watch_events(
    store: Store, *, category: str | None = None, last: int = 20, follow: bool = False,
    poll_s: float = POLL_S,
) -> Iterator[feeds.FeedEvent]:
    """About the `last` events the consumer stored (of one category, or all), oldest first;
    with `follow`, then every new one as it is stored, until the caller stops."""
    sql = cast(SQLStore, store)
    after = max(0, feeds.last_event_id(sql) - last)
    follower = feeds.Follower(after, gap_wait_s=2.0)
    while True:
        page = feeds.events_after(sql, follower.after, limit=500)
        for event in follower.take(page):
            if category is None or event.category == category:
                yield event
        if len(page) < 500:
            if not follow:
                return
            time.sleep(poll_s)


def watchers(config: LoadedConfig, tube: str) -> int:
    """How many connections watch `tube` over all the servers (a consumer is one)."""
    total = 0
    for server in servers_of(config.addresses):
        conn = Connection(server)
        try:
            total += int(conn.client.stats_tube(tube)["current-watching"])
        except greenstalk.NotFoundError:
            continue
        except CONNECTION_ERRORS:
            continue
        finally:
            conn.close()
    return total
