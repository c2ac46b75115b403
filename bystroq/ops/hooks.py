"""Event hooks: Python callbacks and webhooks, called with each event the consumer applied.

A hook follows the store's event feed (bystroq.records.feeds) from where it last got to,
calls its callback with each event (an `EventView`, the public schema), and moves its
cursor in the store only once the callback returned: a callback that raises, or a process
that dies, gets the same events again later. At least once, in order, never from the
events tube (the consumer keeps those).

Webhooks are such callbacks: each event is POSTed as JSON to the URL, signed

    X-Bystroq-Timestamp: <unix seconds>
    X-Bystroq-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
    X-Bystroq-Event-Id: <the event's feed id; the same on a redelivery>

and any answer but 2xx is retried with capped exponential backoff; every attempt is logged
in the store (`deliveries`). Each hook is run by one process at a time (a lease in the
store), so several web processes do not deliver an event once each. A receiver checks the
signature over the raw body, refuses a timestamp far from its clock, and drops an
Event-Id it already has.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from bystroq.messages import key_to_submission_id
from bystroq.records import feeds
from bystroq.records.sql import SQLStore
from bystroq.records.views import View

GAP_WAIT_S = 2.0
PAGE = 200
# A hook's lease: the process that holds it delivers; another takes over this long after
# the holder stopped renewing it (it died), from the stored cursor.
LEASE_S = 30.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
WEBHOOK_TIMEOUT_S = 10.0


class EventView(View, frozen=True):
    """One event the consumer applied: its feed id, the submission it is about, and the
    event as it was on the wire (`message`)."""

    id: int
    submission_id: str | int = msgspec.field(name="submissionID")
    category: str
    event: str
    at: float
    attempt: int | None
    seq: int | None
    applied: bool
    batch: str | None
    message: dict[str, Any]


def event_view(event: feeds.FeedEvent) -> EventView:
    return EventView(id=event.id, submission_id=key_to_submission_id(event.submission_id),
                     category=event.category, event=event.event, at=event.at,
                     attempt=event.attempt, seq=event.seq, applied=event.applied,
                     batch=event.batch, message=event.body)


Callback = Callable[[EventView], object]


@dataclass
class Hook:
    """A callback following the event feed under `name` (its cursor in the store).

    A new hook starts at the newest event (`from_start`: at the first one)."""

    store: SQLStore
    name: str
    callback: Callback
    categories: Sequence[str] = ()
    from_start: bool = False
    lease_s: float = LEASE_S
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}.{os.getpid()}."
                       f"{uuid.uuid4().hex[:8]}")
    failures: int = 0
    retry_at: float = 0.0
    _follower: feeds.Follower | None = field(default=None, repr=False)
    _leased_until: float = 0.0

    def step(self) -> int:
        """Call the callback with the events after the cursor; how many were handled.
        A callback that raises stops the step; its event comes again after a backoff.
        Only the process holding the hook's lease in the store steps it (others: 0)."""
        if time.monotonic() < self.retry_at or not self._leased():
            return 0
        follower = self._follower or self._start()
        page = feeds.events_after(self.store, follower.after, limit=PAGE)
        start = handled = follower.after
        done = 0
        for event in follower.take(page):
            if not self.categories or event.category in self.categories:
                try:
                    self.callback(event_view(event))
                except Exception as exc:
                    self._failed(event.id, exc)
                    follower.after = handled  # this event comes again
                    break
            handled = event.id
            done += 1
        else:
            self.failures = 0
        if handled != start:
            feeds.set_hook_cursor(self.store, self.name, handled)
        return done

    def _leased(self) -> bool:
        """Hold (or take) the lease, renewing it when half of it has passed."""
        now = time.time()
        if now < self._leased_until - self.lease_s / 2:
            return True
        if feeds.lease_hook(self.store, self.name, self.owner, self.lease_s, now):
            self._leased_until = now + self.lease_s
            return True
        self._leased_until = 0.0
        self._follower = None  # another process moves the cursor meanwhile
        return False

    def release(self) -> None:
        """Give the lease up (on a clean shutdown), so another process takes over now."""
        if self._leased_until:
            feeds.release_hook(self.store, self.name, self.owner)
            self._leased_until = 0.0

    def _start(self) -> feeds.Follower:
        after = feeds.hook_cursor(self.store, self.name)
        if after is None:
            after = 0 if self.from_start else feeds.last_event_id(self.store)
            feeds.set_hook_cursor(self.store, self.name, after)
        self._follower = feeds.Follower(after, GAP_WAIT_S)
        return self._follower

    def _failed(self, event_id: int, exc: Exception) -> None:
        self.failures += 1
        delay = min(BACKOFF_FIRST_S * 2 ** (self.failures - 1), BACKOFF_MAX_S)
        self.retry_at = time.monotonic() + delay
        structlog.get_logger("bystroq.hooks").warning(
            "event hook failed; retrying", hook=self.name, event_id=event_id,
            attempt=self.failures, retry_in_s=delay, error=str(exc) or type(exc).__name__)


class WebhookError(Exception):
    """A webhook did not answer 2xx."""


_ENCODE = msgspec.json.Encoder().encode


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Bystroq-Signature of `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


@dataclass
class Webhook:
    """A callback that POSTs each event to `url`, signed with `secret`, logging each
    attempt in the store."""

    store: SQLStore
    url: str
    secret: str = field(repr=False)
    timeout_s: float = WEBHOOK_TIMEOUT_S
    _attempts: dict[int, int] = field(default_factory=dict)

    def __call__(self, event: EventView) -> None:
        body = _ENCODE(event)
        timestamp = str(int(time.time()))
        attempt = self._attempts.get(event.id, 0) + 1
        self._attempts = {event.id: attempt}
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "bystroq-webhook",
            "X-Bystroq-Timestamp": timestamp, "X-Bystroq-Event-Id": str(event.id),
            "X-Bystroq-Signature": sign(self.secret, timestamp, body)})
        status: int | None = None
        error: str | None = None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc)) or type(exc).__name__
        feeds.log_delivery(self.store, feeds.Delivery(
            url=self.url, event_id=event.id, attempt=attempt, status=status, error=error,
            at=time.time()))
        if error is not None or status is None or not 200 <= status < 300:
            raise WebhookError(f"{self.url}: {error or status}")


class HookRunner:
    """Steps hooks in a thread of its own until closed."""

    def __init__(self, hooks: Sequence[Hook], poll_s: float = 0.2) -> None:
        self.hooks = list(hooks)
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bystroq-hooks", daemon=True)

    def start(self) -> HookRunner:
        self._thread.start()
        return self

    def _run(self) -> None:
        log = structlog.get_logger("bystroq.hooks")
        while not self._stop.is_set():
            busy = False
            for hook in self.hooks:
                try:
                    busy = bool(hook.step()) or busy
                except Exception as exc:  # the store is away: try again later
                    log.warning("event hook step failed", hook=hook.name, error=str(exc))
            if not busy:
                self._stop.wait(self.poll_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for hook in self.hooks:
            try:
                hook.release()
            except Exception as exc:  # the store is away: the lease runs out by itself
                structlog.get_logger("bystroq.hooks").warning(
                    "event hook lease not released", hook=hook.name, error=str(exc))
