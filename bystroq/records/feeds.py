"""Queries for the HTTP API over the SQL stores: pages of records by keyset, the event
feed in the order it was stored, and idempotency keys.

- `list_page` orders by submissionID and continues after the last one seen, so paging
  through the records never skips or repeats one, however many arrive meanwhile.
- `events_after` reads the event log (bystroq_events) by its feed id: SQLite's rowid (one
  writer at a time, so the rowid order is the commit order) or PostgreSQL's `feed_id`
  sequence (taken at insert: a later id can commit first; see bystroq.web.sse for how a
  reader waits for such a gap to fill).
- An idempotency key is claimed once (`claim_key`), then holds the response
  (`finish_key`) or is dropped when the request changed nothing (`drop_key`); keys older
  than the time to live are deleted as new ones are claimed.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from bystroq.records.model import Record
from bystroq.records.rows import RECORD_COLUMNS, row_record
from bystroq.records.sql import SQLStore
from bystroq.records.sqlite import SQLiteBackend

_DECODE_BODY = msgspec.json.Decoder(dict[str, Any])


class FeedEvent(msgspec.Struct, kw_only=True, frozen=True):
    """An event as the store logged it, with its place in the feed."""

    id: int
    submission_id: str
    category: str
    event: str
    at: float
    attempt: int | None
    seq: int | None
    worker: str | None
    applied: bool
    body: dict[str, Any]
    batch: str | None  # of the submission's record


class IdempotencyRow(msgspec.Struct, kw_only=True, frozen=True):
    key: str
    fingerprint: str
    state: str  # "pending" while the first request runs, then "done"
    status: int | None
    response: str | None
    created_at: float


class Follower:
    """Reads the feed in order, holding back at a gap in the ids until it fills or is
    `gap_wait_s` old (see the module docstring)."""

    def __init__(self, after: int, gap_wait_s: float) -> None:
        self.after = after
        self.gap_wait_s = gap_wait_s
        self._gap_since: float | None = None

    def take(self, events: list[FeedEvent]) -> list[FeedEvent]:
        """The events of an unfiltered page that may be handled now, in order."""
        out = []
        for event in events:
            if event.id != self.after + 1:
                now = time.monotonic()
                self._gap_since = self._gap_since or now
                if now - self._gap_since < self.gap_wait_s:
                    break
            self._gap_since = None
            out.append(event)
            self.after = event.id
        return out


def _sql(store: SQLStore, text: str) -> str:
    mark = store.backend.placeholder
    return text if mark == "?" else text.replace("?", mark)


def list_page(
    store: SQLStore, *, category: str | None = None, state: str | None = None,
    batch: str | None = None, since: float | None = None, until: float | None = None,
    text: str | None = None, after: str | None = None, limit: int = 50,
) -> list[Record]:
    """Up to `limit` records matching the filters, by submissionID, after `after`.

    `since`/`until` bound the last update; `text` is looked for (case-insensitively) in
    the submissionID and the failure reason."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    for column, value in (("category", category), ("state", state), ("batch", batch)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("updated_at >= ?")
        params.append(since)
    if until is not None:
        where.append("updated_at < ?")
        params.append(until)
    if text:
        pattern = like_pattern(text)
        where.append(text_match(store))
        params += [pattern, pattern]
    if after is not None:
        where.append("submission_id > ?")
        params.append(after)
    query = (f"SELECT {', '.join(RECORD_COLUMNS)} FROM bystroq_records WHERE "
             f"{' AND '.join(where)} ORDER BY submission_id LIMIT ?")
    with store.transaction() as cur:
        cur.execute(_sql(store, query), (*params, limit))
        return [row_record(row) for row in cur.fetchall()]


def like_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') for `text` anywhere, lowercased."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace(
        "_", "\\_") + "%"


def text_match(store: SQLStore) -> str:
    """SQL for a `like_pattern` (given twice) in the submissionID or the reason, whatever
    the case: SQLite's LIKE already ignores ASCII case (its LOWER folds no more), so no
    function runs on each row; PostgreSQL's ILIKE."""
    like = "LIKE" if isinstance(store.backend, SQLiteBackend) else "ILIKE"
    return f"(submission_id {like} ? ESCAPE '\\' OR reason {like} ? ESCAPE '\\')"


def _feed_column(store: SQLStore) -> str:
    return "e.rowid" if isinstance(store.backend, SQLiteBackend) else "e.feed_id"


def last_event_id(store: SQLStore) -> int:
    """The feed id of the newest event stored (0 when none)."""
    with store.transaction() as cur:
        cur.execute(f"SELECT MAX({_feed_column(store)}) FROM bystroq_events e")
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def events_after(
    store: SQLStore, after: int, *, limit: int = 200, category: str | None = None,
    submission_id: str | None = None, batch: str | None = None,
) -> list[FeedEvent]:
    """Events stored after feed id `after`, oldest first, optionally of one category,
    submission or batch."""
    column = _feed_column(store)
    where: list[str] = [f"{column} > ?"]
    params: list[Any] = [after]
    if category is not None:
        where.append("e.category = ?")
        params.append(category)
    if submission_id is not None:
        where.append("e.submission_id = ?")
        params.append(submission_id)
    if batch is not None:
        where.append("r.batch = ?")
        params.append(batch)
    query = (f"SELECT {column}, e.submission_id, e.category, e.event, e.at, e.attempt, "
             f"e.seq, e.worker, e.applied, e.body, r.batch FROM bystroq_events e "
             f"LEFT JOIN bystroq_records r ON r.submission_id = e.submission_id "
             f"WHERE {' AND '.join(where)} ORDER BY {column} LIMIT ?")
    with store.transaction() as cur:
        cur.execute(_sql(store, query), (*params, limit))
        rows = cur.fetchall()
    return [FeedEvent(id=int(r[0]), submission_id=r[1], category=r[2], event=r[3], at=r[4],
                      attempt=r[5], seq=r[6], worker=r[7], applied=bool(r[8]),
                      body=_DECODE_BODY.decode(r[9]), batch=r[10]) for r in rows]


def claim_key(store: SQLStore, key: str, fingerprint: str, ttl_s: float,
              now: float | None = None) -> tuple[bool, IdempotencyRow]:
    """Claim `key` for a request with `fingerprint`: (True, row) when this call claimed
    it, else (False, the first request's row). Deletes keys older than `ttl_s`."""
    now = time.time() if now is None else now
    with store.transaction() as cur:
        cur.execute(_sql(store, "DELETE FROM bystroq_idempotency WHERE created_at < ?"),
                    (now - ttl_s,))
        cur.execute(_sql(store, "INSERT INTO bystroq_idempotency (key, fingerprint, state, "
                                "created_at) VALUES (?, ?, 'pending', ?) "
                                "ON CONFLICT (key) DO NOTHING"), (key, fingerprint, now))
        claimed = cur.rowcount == 1
        cur.execute(_sql(store, "SELECT key, fingerprint, state, status, response, created_at"
                                " FROM bystroq_idempotency WHERE key = ?"), (key,))
        row = cur.fetchone()
    return claimed, IdempotencyRow(key=row[0], fingerprint=row[1], state=row[2],
                                   status=row[3], response=row[4], created_at=row[5])


def finish_key(store: SQLStore, key: str, status: int, response: str) -> None:
    """Keep the first request's response for the key's repeats."""
    with store.transaction() as cur:
        cur.execute(_sql(store, "UPDATE bystroq_idempotency SET state = 'done', status = ?, "
                                "response = ? WHERE key = ?"), (status, response, key))


def drop_key(store: SQLStore, key: str) -> None:
    """Forget a key whose request changed nothing, so that it may be sent again."""
    with store.transaction() as cur:
        cur.execute(_sql(store, "DELETE FROM bystroq_idempotency WHERE key = ?"), (key,))


def hook_cursor(store: SQLStore, name: str) -> int | None:
    """The feed id hook `name` has handled everything up to (None: it never ran)."""
    with store.transaction() as cur:
        cur.execute(_sql(store, "SELECT after FROM bystroq_hook_cursors WHERE name = ?"),
                    (name,))
        row = cur.fetchone()
    return None if row is None or row[0] < 0 else int(row[0])


def set_hook_cursor(store: SQLStore, name: str, after: int) -> None:
    """Hook `name` handled everything up to feed id `after` (never moves back)."""
    with store.transaction() as cur:
        cur.execute(_sql(store, "INSERT INTO bystroq_hook_cursors (name, after, updated_at) "
                                "VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                                "after = excluded.after, updated_at = excluded.updated_at "
                                "WHERE bystroq_hook_cursors.after < excluded.after"),
                    (name, after, time.time()))


def lease_hook(store: SQLStore, name: str, owner: str, lease_s: float,
               now: float | None = None) -> bool:
    """Whether `owner` runs hook `name` for the next `lease_s` seconds: it already did, or
    no one did within its lease. One process at a time delivers a hook's events."""
    now = time.time() if now is None else now
    with store.transaction() as cur:
        cur.execute(_sql(store, "INSERT INTO bystroq_hook_cursors (name, after, updated_at) "
                                "VALUES (?, -1, ?) ON CONFLICT (name) DO NOTHING"),
                    (name, now))
        cur.execute(_sql(store, "UPDATE bystroq_hook_cursors SET owner = ?, lease_until = ? "
                                "WHERE name = ? AND (owner = ? OR owner IS NULL OR "
                                "lease_until < ?)"),
                    (owner, now + lease_s, name, owner, now))
        return bool(cur.rowcount == 1)


def release_hook(store: SQLStore, name: str, owner: str) -> None:
    """Give up the lease of hook `name` (another process may take it at once)."""
    with store.transaction() as cur:
        cur.execute(_sql(store, "UPDATE bystroq_hook_cursors SET lease_until = 0 "
                                "WHERE name = ? AND owner = ?"), (name, owner))


class Delivery(msgspec.Struct, kw_only=True, frozen=True):
    """One attempt to deliver an event to a webhook."""

    url: str
    event_id: int
    attempt: int
    status: int | None  # the HTTP status, None when no answer came
    error: str | None
    at: float


def log_delivery(store: SQLStore, delivery: Delivery) -> None:
    with store.transaction() as cur:
        cur.execute(_sql(store, "INSERT INTO bystroq_webhook_deliveries (url, event_id, "
                                "attempt, status, error, at) VALUES (?, ?, ?, ?, ?, ?) "
                                "ON CONFLICT (url, event_id, attempt) DO NOTHING"),
                    (delivery.url, delivery.event_id, delivery.attempt, delivery.status,
                     delivery.error, delivery.at))


def deliveries(store: SQLStore, url: str | None = None, limit: int = 100) -> list[Delivery]:
    """Webhook delivery attempts, newest first."""
    where, params = ("WHERE url = ?", [url]) if url is not None else ("", [])
    with store.transaction() as cur:
        cur.execute(_sql(store, f"SELECT url, event_id, attempt, status, error, at FROM "
                                f"bystroq_webhook_deliveries {where} ORDER BY at DESC, "
                                f"event_id DESC, attempt DESC LIMIT ?"), (*params, limit))
        rows = cur.fetchall()
    return [Delivery(url=r[0], event_id=int(r[1]), attempt=r[2], status=r[3], error=r[4],
                     at=r[5]) for r in rows]
