"""What the endpoints share, built by `create_router` and closed with it: the config, the
records store and a producer (both opened on first use, from any thread), the submitter
that puts concurrent requests' jobs together, the category decoders, and the cap on request
bodies."""

from __future__ import annotations

import threading
from typing import Any

from bystroq.config import LoadedConfig
from bystroq.errors import BystroqError
from bystroq.messages import JobDecoder
from bystroq.ops.health import ServerUp, server_health
from bystroq.ops.submit import job_decoder
from bystroq.producer import Producer
from bystroq.records.batchstore import Store
from bystroq.records.store import open_store
from bystroq.web.serial import SerialCalls
from bystroq.web.settings import WebSettings
from bystroq.web.submitter import Submitter

# beanstalkd's own default max-job-size, used while no server has answered.
DEFAULT_MAX_JOB_SIZE = 65_535


class Services:
    """The shared state of one router (one per app; nothing global)."""

    def __init__(self, config: LoadedConfig, settings: WebSettings) -> None:
        self.config = config
        self.settings = settings
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._feed_store: Store | None = None
        self._producer: Producer | None = None
        self._decoders: dict[str, tuple[JobDecoder[Any] | None, str]] = {}
        self._max_job_size: int | None = None
        self.submitter = Submitter(lambda: self.producer)
        # Short writes to the store from requests (idempotency keys), one after another.
        self.store_calls = SerialCalls("bystroq-web-store")

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings.records_url)
            return self._store

    @property
    def feed_store(self) -> Store:
        """The store again, read-only, for following the event feed: its reads never
        wait for a write lock, nor make writers wait."""
        store = self.store  # creates the schema the read-only store needs
        with self._lock:
            if self._feed_store is None:
                try:
                    self._feed_store = open_store(store.url, read_only=True)
                except BystroqError:  # e.g. an in-memory database: only its own connection
                    self._feed_store = store
            return self._feed_store

    @property
    def producer(self) -> Producer:
        store = self.store
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self.config, recorder=store)
            return self._producer

    def decoder(self, category: str) -> tuple[JobDecoder[Any] | None, str]:
        """The category's Struct decoder (None and why when its listener does not import)."""
        with self._lock:
            if category not in self._decoders:
                self._decoders[category] = job_decoder(self.config, category)
            return self._decoders[category]

    def body_limit(self) -> int:
        """The largest request body taken: the setting, else the smallest max-job-size of
        the servers (asked until one answers)."""
        if self.settings.max_body_bytes is not None:
            return self.settings.max_body_bytes
        if self._max_job_size is None:
            sizes = [row.max_job_size for row in server_health(self.config)
                     if isinstance(row, ServerUp)]
            if not sizes:
                return DEFAULT_MAX_JOB_SIZE
            self._max_job_size = min(sizes)
        return self._max_job_size

    def known_body_limit(self) -> int | None:
        """`body_limit()` once it is known without asking a server; else None."""
        if self.settings.max_body_bytes is not None:
            return self.settings.max_body_bytes
        return self._max_job_size

    def known_decoder(self, category: str) -> tuple[JobDecoder[Any] | None, str] | None:
        """`decoder(category)` once it was built (importing a listener blocks); else None."""
        return self._decoders.get(category)

    def close(self) -> None:
        self.submitter.close()
        self.store_calls.close()
        with self._lock:
            producer, self._producer = self._producer, None
            store, self._store = self._store, None
            feed_store, self._feed_store = self._feed_store, None
        if producer is not None:
            producer.close()
        if feed_store is not None and feed_store is not store:
            feed_store.close()
        if store is not None:
            store.close()
