"""Progress from inside a handler: Bystro's ProgressPublisher and a throttled reporter."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from bystroq.config import Wire
from bystroq.messages import ProgressData, ProgressMessage, encode, stamp
from bystroq.servers import CONNECTION_ERRORS, Connection, Server

# put(tube, body): how events reach the server; the worker passes one that reuses its
# connection, else the reporter opens its own.
Sender = Callable[[str, bytes], None]


class Flushable(Protocol):
    """A reporter that may hold its last count back until the handler ends."""

    def flush(self) -> None: ...


@dataclass
class ProgressPublisher:
    """Where a job's progress goes (Bystro's shape): a server, an events tube, a template.

    `message` is the ProgressMessage every event is built from (submissionID and the
    worker's extension fields already set).
    """

    host: str
    port: int
    queue: str
    message: ProgressMessage
    sender: Sender | None = field(default=None, repr=False, compare=False)
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False,
                               compare=False)
    last_seq: int = field(default=0, repr=False, compare=False)
    reporters: list[Flushable] = field(default_factory=list, repr=False, compare=False)
    # The spelling of the ids written (the config's `wire:`); None: as the message has them.
    wire: Wire | None = field(default=None, repr=False, compare=False)

    def publish(self, data: ProgressData | str | None) -> None:
        """Put one progress event with `data` on the events tube."""
        self.put(msgspec.structs.replace(self.message, data=data))

    def put(self, message: msgspec.Struct) -> None:
        """Put one progress event built elsewhere (e.g. a Bystro-shaped message), with the
        template's extension fields (queueID, attempt, worker), `at` and the next `seq`."""
        self.last_seq = next(self.seq)
        fields = {name: getattr(self.message, name, None)
                  for name in ("queueID", "attempt", "worker")}
        body = encode(stamp(message, **fields, at=time.time(), seq=self.last_seq), self.wire)
        if self.sender is None:
            self.sender = own_sender(self.host, self.port)
        self.sender(self.queue, body)

    def flush(self) -> None:
        """Send every reporter's held-back last value (the worker calls this at the end)."""
        for reporter in self.reporters:
            reporter.flush()


def own_sender(host: str, port: int) -> Sender:
    """A sender with a connection of its own (for publishers made outside a worker)."""
    conn = Connection(Server(host, port))

    def send(tube: str, body: bytes) -> None:
        with conn.lock:
            try:
                conn.use_tube(tube).put(body)
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)
                raise

    return send


class ProgressReporter:
    """Counts work done and publishes it, throttled by time (and optionally by count).

    By default an event goes out at most once every `min_interval_s` (one second) while
    the counts change: a 100-step handler is seen moving. With `update_interval` N, the
    count must also have grown by N since the last event. `force=True` sends at once;
    `flush()` sends the last value if it was held back, so the final count always reaches
    the server. Give `total` (here or with `set_total`) when the amount of work is known:
    records then show a percentage and an ETA.
    """

    def __init__(
        self, publisher: ProgressPublisher, update_interval: int = 1,
        min_interval_s: float = 1.0, total: int | None = None,
    ) -> None:
        self.publisher = publisher
        self.update_interval = update_interval
        self.min_interval_s = min_interval_s
        self.total = total
        self._progress = 0
        self._skipped = 0
        self._sent: tuple[int, int] = (0, 0)
        self._sent_at = float("-inf")
        self._lock = threading.Lock()

    def increment(self, count: int = 1, force: bool = False) -> int:
        """Add `count` records done; returns the new total."""
        with self._lock:
            self._progress += count
            self._maybe_send(force)
            return self._progress

    def increment_skipped(self, count: int = 1, force: bool = False) -> int:
        """Add `count` records skipped; returns the new total skipped."""
        with self._lock:
            self._skipped += count
            self._maybe_send(force)
            return self._skipped

    def set_total(self, total: int | None) -> None:
        """How much work there is in all (sent with the next event)."""
        with self._lock:
            self.total = total
            self._sent = (-1, -1)  # the next count goes out with the new total

    def message(self, text: str) -> None:
        """Publish a line of text (not throttled)."""
        self.publisher.publish(text)

    def get_counter(self) -> int:
        return self._progress

    def flush(self) -> None:
        """Send the current counts if they changed since the last event."""
        with self._lock:
            if (self._progress, self._skipped) != self._sent:
                self._send()

    def _maybe_send(self, force: bool) -> None:
        grown = self._progress + self._skipped - sum(self._sent)
        due = time.monotonic() - self._sent_at >= self.min_interval_s
        if force or (grown >= self.update_interval and due):
            self._send()

    def _send(self) -> None:
        self._sent = (self._progress, self._skipped)
        self._sent_at = time.monotonic()
        self.publisher.publish(ProgressData(progress=self._progress, skipped=self._skipped,
                                            total=self.total))


def get_progress_reporter(
    publisher: ProgressPublisher, update_interval: int = 1, min_interval_s: float = 1.0,
    total: int | None = None,
) -> ProgressReporter:
    """A handler's reporter for its publisher (Bystro's entry point, with `total`)."""
    reporter = ProgressReporter(publisher, update_interval, min_interval_s, total)
    publisher.reporters.append(reporter)
    return reporter
