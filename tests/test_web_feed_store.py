"""The live event feed reads over a read-only connection of its own, which sees what the
store's writers commit; an in-memory database, which has no second connection, is shared."""

from __future__ import annotations

from pathlib import Path

from bystroq.config import LoadedConfig
from bystroq.messages import CompletedJobMessage, encode
from bystroq.records import feeds
from bystroq.records.model import parse_event
from bystroq.web.services import Services
from bystroq.web.settings import WebSettings


def test_the_feed_has_a_read_only_connection_that_sees_commits(
        config: LoadedConfig, tmp_path: Path) -> None:
    services = Services(config, WebSettings(records_url=f"sqlite:///{tmp_path / 'r.db'}"))
    try:
        feed = services.feed_store
        assert feed is not services.store and feed.read_only
        assert feeds.last_event_id(feed) == 0
        event = parse_event(encode(CompletedJobMessage(submissionID="f1", at=1.0)), "echo",
                            "s:1", 1)
        services.store.apply_events([event])
        (seen,) = feeds.events_after(feed, 0)
        assert (seen.submission_id, seen.event) == ("f1", "completed")
    finally:
        services.close()


def test_an_in_memory_store_is_shared_by_the_feed(config: LoadedConfig) -> None:
    services = Services(config, WebSettings(records_url="sqlite:///:memory:"))
    try:
        assert services.feed_store is services.store
    finally:
        services.close()
