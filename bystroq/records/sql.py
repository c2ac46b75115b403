"""The records store over SQL: one schema and one code path for SQLite and PostgreSQL.

A backend supplies a way to connect, its placeholder and how to lock records; everything
else is here. The schema is created and migrated by the store (table `bystroq_schema`
holds the version). Applying a batch of events is one transaction: lock the records the
events touch, drop duplicates, load the records, run the state machine, write the records
and the event log back.

Concurrency: every read-modify-write of a record first takes the record's lock, in a fixed
(sorted) order, so any number of producers and consumers can write the same records at
once (SQLite: one writer at a time, `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped
advisory lock per submission). A transaction that still deadlocks, or meets a
serialization failure, is run again from the start.

Failures: a database that cannot be reached (connection lost, server restarted, disk full)
raises StoreUnavailable; the connection is opened again on a later call, no sooner than a
capped backoff allows, and each change of state is logged once.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ParamSpec, TypeVar

import msgspec
import structlog

from bystroq.errors import BystroqError, StoreUnavailable
from bystroq.messages import key_to_submission_id
from bystroq.records import model
from bystroq.records.model import IncomingEvent, Record, TimelineEntry

RECORD_COLUMNS = tuple(Record.__struct_fields__)
_JSON_COLUMNS = frozenset({"messages", "result", "prior_runs"})
_BOOL_COLUMNS = frozenset({"attempt_done"})

# Each entry migrates the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE bystroq_records (
            submission_id TEXT PRIMARY KEY, category TEXT NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL, queue_id BIGINT, server TEXT, worker TEXT,
            progress BIGINT NOT NULL, skipped BIGINT NOT NULL, messages TEXT NOT NULL,
            result TEXT, reason TEXT, batch TEXT, submitted_at DOUBLE PRECISION,
            started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION, run_base INTEGER NOT NULL,
            attempt_done INTEGER NOT NULL, seq INTEGER NOT NULL, prior_runs TEXT NOT NULL,
            body TEXT)""",
        "CREATE INDEX bystroq_records_run ON bystroq_records (server, queue_id)",
        "CREATE INDEX bystroq_records_batch ON bystroq_records (batch, state)",
        "CREATE INDEX bystroq_records_updated ON bystroq_records (updated_at)",
        """CREATE TABLE bystroq_events (
            key TEXT PRIMARY KEY, submission_id TEXT, category TEXT NOT NULL,
            server TEXT NOT NULL, queue_id BIGINT, attempt INTEGER, seq INTEGER,
            event TEXT NOT NULL, worker TEXT, at DOUBLE PRECISION NOT NULL,
            applied INTEGER NOT NULL, body TEXT NOT NULL)""",
        "CREATE INDEX bystroq_events_submission ON bystroq_events (submission_id, at)",
    ),
    (
        """CREATE TABLE bystroq_batches (
            batch_id TEXT PRIMARY KEY, category TEXT NOT NULL, total INTEGER NOT NULL,
            fed INTEGER NOT NULL, concurrency INTEGER NOT NULL, error_policy TEXT NOT NULL,
            priority BIGINT NOT NULL, state TEXT NOT NULL, reason TEXT,
            created_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION,
            watermarks TEXT NOT NULL)""",
        """CREATE TABLE bystroq_batch_items (
            batch_id TEXT NOT NULL, n INTEGER NOT NULL, submission_id TEXT NOT NULL,
            body TEXT NOT NULL, PRIMARY KEY (batch_id, n))""",
    ),
    (
        # A batch item's put in progress (see bystroq.records.batchstore): its claim's
        # generation, the servers' last ids before it, and where the job went.
        """CREATE TABLE bystroq_batch_claims (
            batch_id TEXT NOT NULL, n INTEGER NOT NULL, gen INTEGER NOT NULL,
            claimed_at DOUBLE PRECISION NOT NULL, put_after TEXT NOT NULL,
            queue_id BIGINT, server TEXT, PRIMARY KEY (batch_id, n))""",
        # Claims made before this version (put without parking): recovered as generation 0.
        """INSERT INTO bystroq_batch_claims (batch_id, n, gen, claimed_at, put_after)
            SELECT i.batch_id, i.n, 0, 0, '{}' FROM bystroq_batch_items i
            JOIN bystroq_records r ON r.submission_id = i.submission_id
            AND r.batch = i.batch_id WHERE r.state = 'queued' AND r.queue_id IS NULL""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_ENCODE = msgspec.json.Encoder().encode
_S = TypeVar("_S", bound="SQLStore")
_P = ParamSpec("_P")
_T = TypeVar("_T")
_DECODE_BODY = msgspec.json.Decoder(dict[str, Any])

# How often a transaction that deadlocked (or met a serialization failure) is run again.
CONFLICT_RETRIES = 8
# Reconnecting to a store that went away: first wait, and the cap of the doubling waits.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0


class Conflict(Exception):
    """A transaction lost a race it cannot win by waiting (deadlock, serialization)."""


def retry_conflicts(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run a store method that is one transaction again when it loses a race."""

    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return method(*args, **kwargs)
            except Conflict:
                time.sleep(0.001 * 2**attempt)
        return method(*args, **kwargs)

    return run


class SQLStore:
    """Submission records in a SQL database (see the module docstring)."""

    placeholder = "?"
    # Whether `_lock_records` takes locks (SQLite's transactions lock the whole database,
    # so its lock keys are not even computed).
    locks_records = False
    url: str

    def __init__(self, url: str, conn: Any, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self._conn: Any = conn
        self._lock = threading.RLock()
        self._log = structlog.get_logger("bystroq.records")
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff_s = RECONNECT_FIRST_S
        if read_only:
            self._check_schema()
        else:
            self._migrate()

    # -- what a backend supplies -------------------------------------------------------

    def _connect(self) -> Any:
        """A new connection (called after the last one was lost)."""
        raise StoreUnavailable(f"{self.url}: the connection was lost")

    def _classify(self, exc: BaseException) -> type[BaseException] | None:
        """StoreUnavailable or Conflict for a database error of that kind, else None."""
        return None

    def _lock_records(self, cur: Any, keys: Sequence[int]) -> None:
        """Lock records (by `lock_key`) until the transaction ends, in the order given."""

    def _lock_ids(self, cur: Any, ids: Iterable[str]) -> None:
        if self.locks_records:
            self._lock_records(cur, sorted({lock_key(i) for i in ids}))

    # -- plumbing ----------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        Raises StoreUnavailable when the database cannot be reached, Conflict when the
        transaction lost a race (see `retry_conflicts`)."""
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.cursor()
            except Exception as exc:
                self._failed(exc)
                raise
            try:
                yield cur
                conn.commit()
            except BaseException as exc:
                # The failure below says why; a lost connection is reopened later.
                with suppress(Exception):
                    conn.rollback()
                self._failed(exc)
                raise
            finally:
                with suppress(Exception):
                    cur.close()
        if self._down_since is not None:
            self._log.warning("records store reachable again", store=self.url,
                              down_s=round(time.monotonic() - self._down_since, 1))
            self._down_since, self._backoff_s = None, RECONNECT_FIRST_S

    def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        now = time.monotonic()
        if now < self._retry_at:
            raise StoreUnavailable(f"{self.url}: unavailable; trying again in "
                                   f"{self._retry_at - now:.1f} s")
        try:
            self._conn = self._connect()
        except StoreUnavailable:
            self._wait_longer()
            raise
        return self._conn

    def _failed(self, exc: BaseException) -> None:
        """Turn a database error into StoreUnavailable or Conflict (raised from here)."""
        kind = self._classify(exc)
        if kind is Conflict:
            raise Conflict(str(exc)) from exc
        if kind is StoreUnavailable:
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._log.error("records store unavailable", store=self.url,
                                reason=_first_line(exc))
            conn, self._conn = self._conn, None
            if conn is not None:
                with suppress(Exception):
                    conn.close()
            self._wait_longer()
            raise StoreUnavailable(f"{self.url}: {_first_line(exc)}") from exc

    def available_in(self) -> float:
        """Seconds until the store will try to reach its database again (0: now)."""
        if self._conn is not None:
            return 0.0
        return max(0.0, self._retry_at - time.monotonic())

    def _wait_longer(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, RECONNECT_MAX_S)

    def _execute(self, cur: Any, text: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(text), tuple(params))
        return cur

    def _migrate(self) -> None:
        with self.transaction() as cur:
            self._lock_schema(cur)
            self._execute(cur, "CREATE TABLE IF NOT EXISTS bystroq_schema (version INTEGER)")
            row = self._execute(cur, "SELECT version FROM bystroq_schema").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise BystroqError(
                    f"{self.url}: records schema version {version} is newer than this "
                    f"bystroq ({SCHEMA_VERSION}); upgrade bystroq"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    self._execute(cur, statement)
            if row is None:
                self._execute(cur, "INSERT INTO bystroq_schema (version) VALUES (?)",
                              (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                self._execute(cur, "UPDATE bystroq_schema SET version = ?", (SCHEMA_VERSION,))

    def _check_schema(self) -> None:
        """For a read-only store: the schema must be there (nothing is created)."""
        try:
            with self.transaction() as cur:
                row = self._execute(cur, "SELECT version FROM bystroq_schema").fetchone()
        except StoreUnavailable:
            raise
        except Exception:
            raise BystroqError(f"{self.url}: no bystroq records there yet (nothing was "
                               f"recorded; check --records or `records:`)") from None
        if row is None or row[0] > SCHEMA_VERSION:
            raise BystroqError(f"{self.url}: records schema version "
                               f"{None if row is None else row[0]} is not one this bystroq "
                               f"reads ({SCHEMA_VERSION}); upgrade bystroq")

    def _lock_schema(self, cur: Any) -> None:
        """Keep two processes from migrating at once (a backend may override)."""

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rows <-> records --------------------------------------------------------------

    def _load(self, cur: Any, where: str, params: Sequence[Any]) -> list[Record]:
        columns = ", ".join(RECORD_COLUMNS)
        rows = self._execute(cur, f"SELECT {columns} FROM bystroq_records WHERE {where}",
                             params).fetchall()
        return [_record(row) for row in rows]

    def _load_ids(self, cur: Any, ids: Iterable[str], lock: bool = True) -> dict[str, Record]:
        """The records with these ids that exist; locked first (for writing) unless
        `lock` is False. Lock every id a transaction will touch in one call: locks taken
        in several calls can deadlock (the transaction is then run again)."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        if lock:
            self._lock_ids(cur, ids)
        records: dict[str, Record] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            for record in self._load(cur, f"submission_id IN ({marks})", chunk):
                records[record.submission_id] = record
        return records

    def _save(self, cur: Any, records: Sequence[Record]) -> None:
        columns = ", ".join(RECORD_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RECORD_COLUMNS[1:])
        self._insert_many(cur, f"INSERT INTO bystroq_records ({columns}) VALUES",
                          [_row(r) for r in records],
                          f"ON CONFLICT (submission_id) DO UPDATE SET {updates}")

    def _insert_many(self, cur: Any, head: str, rows: Sequence[tuple[Any, ...]],
                     tail: str) -> None:
        """One INSERT statement for many rows (a few, for very many): SQLite runs it faster
        than a statement a row."""
        if not rows:
            return
        width = len(rows[0])
        step = max(1, min(1000, 30_000 // width))
        mark = "(" + ", ".join("?" * width) + ")"
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            values = ", ".join([mark] * len(chunk))
            cur.execute(self._sql(f"{head} {values} {tail}"),
                        [value for row in chunk for value in row])

    # -- applying events ---------------------------------------------------------------

    @retry_conflicts
    def apply_events(self, events: Sequence[IncomingEvent]) -> int:
        """Apply events in one transaction; returns how many changed a record."""
        now = time.time()
        with self.transaction() as cur:
            # Lock what the events name; an event of an undecodable job names only its
            # orphan id, which the producer's record_queued locks too.
            named = {e.submission_id or model.orphan_id(e.server, e.queue_id or 0)
                     for e in events}
            self._lock_ids(cur, named)
            fresh = self._drop_duplicates(cur, events)
            owners = [self._submission_of(cur, e) for e in fresh]
            # Owners found by queueID are locked now (rarely out of order: see Conflict).
            records = self._load_ids(cur, set(owners) - named)
            records.update(self._load_ids(cur, set(owners) & named, lock=False))
            changed: dict[str, Record] = {}
            log: list[tuple[Any, ...]] = []
            for event, submission_id in zip(fresh, owners, strict=True):
                record = records.get(submission_id)
                if record is None:  # an unknown submission: its events create it
                    record = records[submission_id] = model.new_record(event, submission_id)
                    record.updated_at = now
                    changed[submission_id] = record
                applied = model.apply(record, event, now)
                if applied:
                    changed[submission_id] = record
                log.append(_event_row(event, submission_id, applied))
            self._save(cur, list(changed.values()))
            self._insert_many(
                cur, "INSERT INTO bystroq_events (key, submission_id, category, server, "
                "queue_id, attempt, seq, event, worker, at, applied, body) VALUES",
                log, "ON CONFLICT (key) DO NOTHING")
            return sum(row[10] for row in log)

    def _drop_duplicates(
        self, cur: Any, events: Sequence[IncomingEvent]
    ) -> list[IncomingEvent]:
        keys = list({e.key for e in events})
        seen: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._execute(
                cur, f"SELECT key FROM bystroq_events WHERE key IN ({marks})", chunk
            ).fetchall()
            seen.update(row[0] for row in rows)
        fresh = []
        for event in events:
            if event.key not in seen:
                seen.add(event.key)
                fresh.append(event)
        return fresh

    def _submission_of(self, cur: Any, event: IncomingEvent) -> str:
        """The submission an event is about; an undecodable job's is found by its queueID."""
        if event.submission_id is not None:
            return event.submission_id
        assert event.queue_id is not None
        row = self._execute(
            cur, "SELECT submission_id FROM bystroq_records WHERE server = ? AND queue_id = ?",
            (event.server, event.queue_id),
        ).fetchone()
        return row[0] if row else model.orphan_id(event.server, event.queue_id)

    # -- the producer's side -----------------------------------------------------------

    @retry_conflicts
    def record_queued(
        self, submission_id: str, category: str, queue_id: int, server: str,
        batch: str | None = None, at: float | None = None, body: bytes | None = None,
    ) -> Record:
        """The job was put: create or update its record (events may have come first)."""
        at = at or time.time()
        orphan = model.orphan_id(server, queue_id)
        with self.transaction() as cur:
            loaded = self._load_ids(cur, [submission_id, orphan])
            record = loaded.get(submission_id)
            if record is None:
                record = Record(submission_id=submission_id, category=category)
            model.queued(record, queue_id, server, at)
            record.batch = batch or record.batch
            if body is not None:
                record.body = body.decode()
            orphaned = loaded.get(orphan)
            if orphaned is not None and record.attempts == 0:
                # The worker found the job undecodable before this record was written.
                record.state, record.reason = orphaned.state, orphaned.reason
                record.attempts, record.attempt_done = orphaned.attempts, True
                record.finished_at = orphaned.finished_at
                self._execute(cur, "DELETE FROM bystroq_records WHERE submission_id = ?",
                              (orphan,))
                self._execute(cur, "UPDATE bystroq_events SET submission_id = ? "
                              "WHERE submission_id = ?", (submission_id, orphan))
            self._save(cur, [record])
            return record

    @retry_conflicts
    def record_queued_many(
        self, category: str, queued: Sequence[tuple[str, int, str, bytes | None]],
        batch: str | None = None, at: float | None = None,
    ) -> int:
        """Jobs put together, as (submission_id, queue_id, server, body): `record_queued`
        for each, in one transaction that locks every record it touches first."""
        at = at or time.time()
        with self.transaction() as cur:
            orphans = {(server, queue_id): model.orphan_id(server, queue_id)
                       for _, queue_id, server, _ in queued}
            loaded = self._load_ids(cur, [q[0] for q in queued] + list(orphans.values()))
            changed: dict[str, Record] = {}
            for submission_id, queue_id, server, body in queued:
                record = changed.get(submission_id) or loaded.get(submission_id)
                if record is None:
                    record = Record(submission_id=submission_id, category=category)
                model.queued(record, queue_id, server, at)
                record.batch = batch or record.batch
                if body is not None:
                    record.body = body.decode()
                orphan = orphans[server, queue_id]
                orphaned = loaded.get(orphan)
                if orphaned is not None and record.attempts == 0:
                    record.state, record.reason = orphaned.state, orphaned.reason
                    record.attempts, record.attempt_done = orphaned.attempts, True
                    record.finished_at = orphaned.finished_at
                    self._execute(cur, "DELETE FROM bystroq_records WHERE submission_id = ?",
                                  (orphan,))
                    self._execute(cur, "UPDATE bystroq_events SET submission_id = ? "
                                  "WHERE submission_id = ?", (submission_id, orphan))
                changed[submission_id] = record
            self._save(cur, list(changed.values()))
            return len(changed)

    @retry_conflicts
    def record_submit_failed(self, submission_id: str, category: str, reason: str) -> Record:
        """The put failed: the record says why (and is created if it did not exist)."""
        now = time.time()
        with self.transaction() as cur:
            record = self._load_ids(cur, [submission_id]).get(submission_id)
            if record is None:
                record = Record(submission_id=submission_id, category=category)
            if record.run is None or record.state in model.FINAL_STATES:
                record.state, record.reason = "failed", reason
                record.finished_at = record.updated_at = now
                self._save(cur, [record])
            return record

    @retry_conflicts
    def record_submit_unknown(
        self, submission_id: str, category: str, server: str, reason: str, sent_at: float,
        batch: str | None = None, body: bytes | None = None,
    ) -> Record:
        """A put to `server` got no answer: the record waits as `unknown` for the job's
        events (see model.outcome_unknown); created if it did not exist."""
        with self.transaction() as cur:
            record = self._load_ids(cur, [submission_id]).get(submission_id)
            if record is None:
                record = Record(submission_id=submission_id, category=category)
            if model.outcome_unknown(record, server, sent_at, reason, time.time()):
                record.batch = batch or record.batch
                record.body = body.decode() if body is not None else record.body
                self._save(cur, [record])
            return record

    @retry_conflicts
    def resubmitting(self, submission_id: str) -> Record:
        """Mark a record as about to be put again (see model.resubmitting)."""
        with self.transaction() as cur:
            record = self._load_ids(cur, [submission_id]).get(submission_id)
            if record is None:
                raise KeyError(submission_id)
            model.resubmitting(record, time.time())
            self._save(cur, [record])
            return record

    def record_event(self, submission_id: str, event: str, reason: str) -> bool:
        """Apply an event the store makes itself (a cancel of a job that never started)."""
        record = self.get(submission_id)
        if record is None:
            return False
        body = {"event": event, "submissionID": key_to_submission_id(submission_id),
                "queueID": record.queue_id,
                "attempt": record.attempts - record.run_base, "reason": reason,
                "at": time.time(), "worker": "bystroq-cli"}
        # A record not yet put has no server: the event is the store's own.
        incoming = model.parse_event(_ENCODE(body), record.category, record.server or "-")
        return self.apply_events([incoming]) == 1

    # -- queries -----------------------------------------------------------------------

    def get(self, submission_id: str) -> Record | None:
        with self.transaction() as cur:
            return self._load_ids(cur, [submission_id], lock=False).get(submission_id)

    def timeline(self, submission_id: str) -> list[TimelineEntry]:
        """Every event logged for the submission, oldest first."""
        with self.transaction() as cur:
            rows = self._execute(
                cur, "SELECT at, event, attempt, seq, worker, applied, body FROM bystroq_events"
                " WHERE submission_id = ? ORDER BY at, attempt, seq", (submission_id,),
            ).fetchall()
        return [TimelineEntry(at=r[0], event=r[1], attempt=r[2], seq=r[3], worker=r[4],
                              applied=bool(r[5]), body=_DECODE_BODY.decode(r[6]))
                for r in rows]

    def list(
        self, category: str | None = None, state: str | None = None, batch: str | None = None,
        limit: int = 50,
    ) -> list[Record]:
        """Records, most recently updated first."""
        where, params = ["1 = 1"], []
        for column, value in (("category", category), ("state", state), ("batch", batch)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        with self.transaction() as cur:
            return self._load(
                cur, " AND ".join(where) + " ORDER BY updated_at DESC, submission_id LIMIT ?",
                [*params, limit],
            )

    def count_by_state(self, batch: str | None = None) -> dict[str, int]:
        """Number of records in each state (of one batch, or all)."""
        where, params = ("WHERE batch = ?", (batch,)) if batch else ("", ())
        with self.transaction() as cur:
            rows = self._execute(
                cur, f"SELECT state, COUNT(*) FROM bystroq_records {where} GROUP BY state",
                params,
            ).fetchall()
        return {row[0]: int(row[1]) for row in rows}


def lock_key(submission_id: str) -> int:
    """A signed 64-bit number for a submission id (PostgreSQL's advisory lock key)."""
    digest = hashlib.blake2b(submission_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def storable(text: str) -> str:
    """Text a database can hold: NUL (which PostgreSQL refuses in text) written as \\x00."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


_JSON_INDEXES = tuple(i for i, c in enumerate(RECORD_COLUMNS) if c in _JSON_COLUMNS)
_BOOL_INDEXES = tuple(i for i, c in enumerate(RECORD_COLUMNS) if c in _BOOL_COLUMNS)


def _row(record: Record) -> tuple[Any, ...]:
    values = list(msgspec.structs.astuple(record))
    for i in _JSON_INDEXES:
        value = values[i]
        values[i] = None if value is None else _ENCODE(value).decode()
    for i in _BOOL_INDEXES:
        values[i] = int(values[i])
    for i, value in enumerate(values):
        if value.__class__ is str and "\x00" in value:
            values[i] = storable(value)
    return tuple(values)


_JSON_DECODE = msgspec.json.Decoder()


def _record(row: Sequence[Any]) -> Record:
    values: dict[str, Any] = {}
    for column, value in zip(RECORD_COLUMNS, row, strict=True):
        if column in _JSON_COLUMNS and value is not None:
            value = _JSON_DECODE.decode(value)
        elif column in _BOOL_COLUMNS:
            value = bool(value)
        values[column] = value
    return Record(**values)


def _event_row(event: IncomingEvent, submission_id: str, applied: bool) -> tuple[Any, ...]:
    worker = None if event.worker is None else storable(event.worker)
    return (event.key, submission_id, event.category, event.server, event.queue_id,
            event.attempt, event.seq, event.event, worker, event.at, int(applied),
            _ENCODE(event.body).decode())
