"""Batches in the records store: a batch row, its items (the jobs to put, in order), and
the records of the items already put, which carry the batch's id.

An item is *claimed* by moving the batch's `fed` counter past it and writing its record
(state queued, no queueID yet) in one transaction; the feeder then puts the job and the
record gets its queueID. A claim whose record still has no queueID after a grace period
belonged to a feeder that died between the two steps: see bystroq.feeder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import msgspec

from bystroq.records import model
from bystroq.records.model import Record
from bystroq.records.sql import SQLStore

BatchState = Literal["running", "completed", "failed", "cancelled"]
ErrorPolicy = Literal["continue", "stop"]
ACTIVE_STATES = ("queued", "started", "retrying")

_COLUMNS = ("batch_id", "category", "total", "fed", "concurrency", "error_policy", "priority",
            "state", "reason", "created_at", "finished_at", "watermarks")
_WATERMARKS = msgspec.json.Decoder(dict[str, int])


class Batch(msgspec.Struct, kw_only=True):
    """A set of submissions of one category, fed to its tube `concurrency` at a time."""

    batch_id: str
    category: str
    total: int
    fed: int = 0
    concurrency: int = 5
    error_policy: ErrorPolicy = "continue"
    priority: int = 2**16
    state: BatchState = "running"
    reason: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    # server -> the highest queueID put for this batch there (where a lost put can be).
    watermarks: dict[str, int] = msgspec.field(default_factory=dict)


class Store(SQLStore):
    """The records store, with batches."""

    def create_batch(self, batch: Batch, items: Sequence[tuple[str, bytes]]) -> None:
        """Write the batch and all its items (submissionID, job body) in one transaction."""
        with self.transaction() as cur:
            self._execute(cur, f"INSERT INTO bystroq_batches ({', '.join(_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(_COLUMNS))})", _batch_row(batch))
            cur.executemany(
                self._sql("INSERT INTO bystroq_batch_items (batch_id, n, submission_id, body)"
                          " VALUES (?, ?, ?, ?)"),
                [(batch.batch_id, n, sid, body.decode()) for n, (sid, body) in enumerate(items)],
            )

    def get_batch(self, batch_id: str) -> Batch | None:
        batches = self._batches("batch_id = ?", (batch_id,))
        return batches[0] if batches else None

    def list_batches(self, limit: int = 50) -> list[Batch]:
        return self._batches("1 = 1 ORDER BY created_at DESC LIMIT ?", (limit,))

    def running_batches(self) -> list[Batch]:
        return self._batches("state = ? ORDER BY created_at", ("running",))

    def _batches(self, where: str, params: Sequence[object]) -> list[Batch]:
        with self.transaction() as cur:
            rows = self._execute(
                cur, f"SELECT {', '.join(_COLUMNS)} FROM bystroq_batches WHERE {where}", params
            ).fetchall()
        return [_batch(row) for row in rows]

    def claim_batch_items(self, batch_id: str, count: int) -> list[Record]:
        """Claim the next `count` items of a running batch; their records, in order."""
        now = time.time()
        with self.transaction() as cur:
            row = self._execute(cur, "SELECT fed, total, state, category FROM bystroq_batches "
                                "WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None or row[2] != "running":
                return []
            fed, total, category = int(row[0]), int(row[1]), row[3]
            take = min(count, total - fed)
            if take <= 0:
                return []
            claimed = self._execute(
                cur, "UPDATE bystroq_batches SET fed = ? WHERE batch_id = ? AND fed = ?",
                (fed + take, batch_id, fed),
            ).rowcount
            if claimed != 1:  # another feeder claimed them first
                return []
            items = self._execute(
                cur, "SELECT submission_id, body FROM bystroq_batch_items WHERE batch_id = ?"
                " AND n >= ? AND n < ? ORDER BY n", (batch_id, fed, fed + take),
            ).fetchall()
            existing = self._load_ids(cur, [sid for sid, _ in items])
            records = []
            for sid, body in items:
                record = existing.get(sid)
                if record is None:
                    record = Record(submission_id=sid, category=category, submitted_at=now,
                                    updated_at=now)
                else:
                    model.resubmitting(record, now)
                record.batch, record.body = batch_id, body
                records.append(record)
            self._save(cur, records)
            return records

    def unconfirmed_claims(self, batch_id: str, claimed_before: float) -> list[Record]:
        """Claimed records that never got a queueID (their feeder may have died)."""
        with self.transaction() as cur:
            return self._load(cur, "batch = ? AND state = 'queued' AND queue_id IS NULL "
                              "AND submitted_at < ?", (batch_id, claimed_before))

    def batch_in_flight(self, batch_id: str) -> int:
        """Items put (or claimed) and not finished."""
        marks = ", ".join("?" * len(ACTIVE_STATES))
        with self.transaction() as cur:
            row = self._execute(cur, f"SELECT COUNT(*) FROM bystroq_records WHERE batch = ? "
                                f"AND state IN ({marks})", (batch_id, *ACTIVE_STATES)).fetchone()
        return int(row[0])

    def batch_records(self, batch_id: str, states: Sequence[str], limit: int = 1_000_000,
                      ) -> list[Record]:
        """The batch's records in `states`, oldest finished first."""
        marks = ", ".join("?" * len(states))
        with self.transaction() as cur:
            return self._load(cur, f"batch = ? AND state IN ({marks}) ORDER BY finished_at, "
                              "submission_id LIMIT ?", (batch_id, *states, limit))

    def note_puts(self, batch_id: str, server: str, queue_id: int) -> None:
        """Raise the batch's watermark for `server` to `queue_id`."""
        with self.transaction() as cur:
            row = self._execute(cur, "SELECT watermarks FROM bystroq_batches WHERE "
                                "batch_id = ?", (batch_id,)).fetchone()
            marks = _WATERMARKS.decode(row[0])
            if marks.get(server, 0) < queue_id:
                marks[server] = queue_id
                self._execute(cur, "UPDATE bystroq_batches SET watermarks = ? WHERE "
                              "batch_id = ?", (msgspec.json.encode(marks).decode(), batch_id))

    def finish_batch(self, batch_id: str, state: BatchState, reason: str | None) -> bool:
        """Move a running batch to its final state; False if it was not running."""
        with self.transaction() as cur:
            return bool(self._execute(
                cur, "UPDATE bystroq_batches SET state = ?, reason = ?, finished_at = ? "
                "WHERE batch_id = ? AND state = 'running'", (state, reason, time.time(), batch_id),
            ).rowcount)


def _batch_row(batch: Batch) -> tuple[object, ...]:
    values = [getattr(batch, column) for column in _COLUMNS]
    values[-1] = msgspec.json.encode(batch.watermarks).decode()
    return tuple(values)


def _batch(row: Sequence[object]) -> Batch:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["watermarks"] = _WATERMARKS.decode(str(values["watermarks"]))
    return msgspec.convert(values, Batch)
