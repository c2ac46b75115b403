"""The records store over SQL: one schema and one code path for SQLite and PostgreSQL.

The connection, transactions and migrations are the Database's (bystroq.records.database);
a backend supplies how to connect and lock. Applying a batch of events is one
transaction: lock the records the events touch, drop duplicates, load the records, run
the state machine, write the records and the event log back.

Concurrency: every read-modify-write of a record first takes the record's lock, in a fixed
(sorted) order, so any number of producers and consumers can write the same records at
once (SQLite: one writer at a time, `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped
advisory lock per submission). A transaction that still deadlocks, or meets a
serialization failure, is run again from the start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from bystroq.messages import key_to_submission_id
from bystroq.records import model
from bystroq.records.database import Cursor, retry_conflicts
from bystroq.records.model import IncomingEvent, Record, TimelineEntry
from bystroq.records.rows import RECORD_COLUMNS, event_row, lock_key, record_row, row_record
from bystroq.records.workers import WorkerTable

__all__ = ["SQLStore"]

_ENCODE = msgspec.json.Encoder().encode
_DECODE_BODY = msgspec.json.Decoder(dict[str, Any])


class SQLStore(WorkerTable):
    """Submission records (and the live-workers table) in a SQL database (see the module
    docstring)."""

    # -- rows <-> records --------------------------------------------------------------

    def _load(self, cur: Cursor, where: str, params: Sequence[object]) -> list[Record]:
        columns = ", ".join(RECORD_COLUMNS)
        rows = self._execute(cur, f"SELECT {columns} FROM bystroq_records WHERE {where}",
                             params).fetchall()
        return [row_record(row) for row in rows]

    def _load_ids(self, cur: Cursor, ids: Iterable[str], lock: bool = True) -> dict[str, Record]:
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

    def _lock_ids(self, cur: Cursor, ids: Iterable[str]) -> None:
        if self.backend.locks_records:
            self.backend.lock_records(cur, sorted({lock_key(i) for i in ids}))

    def _save(self, cur: Cursor, records: Sequence[Record]) -> None:
        columns = ", ".join(RECORD_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RECORD_COLUMNS[1:])
        self._insert_many(cur, f"INSERT INTO bystroq_records ({columns}) VALUES",
                          [record_row(r) for r in records],
                          f"ON CONFLICT (submission_id) DO UPDATE SET {updates}")

    def _insert_many(self, cur: Cursor, head: str, rows: Sequence[tuple[Any, ...]],
                     tail: str) -> None:
        """INSERT many rows: one statement for many (a few, for very many) where the
        backend runs that faster, else one statement executed for each row."""
        if not rows:
            return
        width = len(rows[0])
        mark = "(" + ", ".join("?" * width) + ")"
        if not self.backend.multi_row_insert:
            cur.executemany(self._sql(f"{head} {mark} {tail}"), rows)
            return
        step = max(1, min(1000, 30_000 // width))
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
                log.append(event_row(event, submission_id, applied))
            self._save(cur, list(changed.values()))
            self._insert_many(
                cur, "INSERT INTO bystroq_events (key, submission_id, category, server, "
                "queue_id, attempt, seq, event, worker, at, applied, body) VALUES",
                log, "ON CONFLICT (key) DO NOTHING")
            return sum(row[10] for row in log)

    def _drop_duplicates(
        self, cur: Cursor, events: Sequence[IncomingEvent]
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

    def _submission_of(self, cur: Cursor, event: IncomingEvent) -> str:
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
        with self.transaction() as cur:
            records = self._queued(cur, category, [(submission_id, queue_id, server, body)],
                                   batch, at or time.time())
            return records[submission_id]

    @retry_conflicts
    def record_queued_many(
        self, category: str, queued: Sequence[tuple[str, int, str, bytes | None]],
        batch: str | None = None, at: float | None = None,
    ) -> int:
        """Jobs put together, as (submission_id, queue_id, server, body): `record_queued`
        for each, in one transaction that locks every record it touches first."""
        with self.transaction() as cur:
            return len(self._queued(cur, category, queued, batch, at or time.time()))

    def _queued(
        self, cur: Cursor, category: str, queued: Sequence[tuple[str, int, str, bytes | None]],
        batch: str | None, at: float,
    ) -> dict[str, Record]:
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
                # The worker found the job undecodable before this record was written.
                record.state, record.reason = orphaned.state, orphaned.reason
                record.attempts, record.attempt_done = orphaned.attempts, True
                record.finished_at = orphaned.finished_at
                self._execute(cur, "DELETE FROM bystroq_records WHERE submission_id = ?",
                              (orphan,))
                self._execute(cur, "UPDATE bystroq_events SET submission_id = ? "
                              "WHERE submission_id = ?", (submission_id, orphan))
            changed[submission_id] = record
        self._save(cur, list(changed.values()))
        return changed

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

    @retry_conflicts
    def claim_submits(self, submission_ids: Sequence[str], hold_s: float) -> dict[str, str]:
        """For a unique submit: claim every id for `hold_s` unless one is active (queued,
        started, retrying, or of unknown outcome) or claimed by another submit. Returns the
        ids refused, each with why (then nothing is claimed); empty: all are claimed."""
        now = time.time()
        with self.transaction() as cur:
            records = self._load_ids(cur, submission_ids)  # and locks them
            refused: dict[str, str] = {sid: record.state for sid, record in records.items()
                       if record.state in model.ACTIVE_STATES}
            ids = sorted(set(submission_ids))
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                for (sid,) in self._execute(
                        cur, f"SELECT submission_id FROM bystroq_submit_claims WHERE "
                             f"submission_id IN ({marks}) AND until_at > ?",
                        (*chunk, now)).fetchall():
                    refused.setdefault(sid, "being submitted")
            if refused:
                return refused
            cur.executemany(self._sql(
                "INSERT INTO bystroq_submit_claims (submission_id, until_at) VALUES (?, ?) "
                "ON CONFLICT (submission_id) DO UPDATE SET until_at = excluded.until_at"),
                [(sid, now + hold_s) for sid in submission_ids])
            return {}

    def release_submits(self, submission_ids: Sequence[str]) -> None:
        """End the claims `claim_submits` took (the queued records now guard the ids)."""
        with self.transaction() as cur:
            cur.executemany(self._sql("DELETE FROM bystroq_submit_claims "
                                      "WHERE submission_id = ?"),
                            [(sid,) for sid in submission_ids])

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
