"""Batches in the records store: a batch row, its items (the jobs to put, in order), the
records of the items already claimed, which carry the batch's id, and the claims: the puts
in progress.

An item is *claimed* by moving the batch's `fed` counter past it, writing its record (state
queued, no queueID yet) and a claim row of generation 0 in one transaction. The feeder then
puts the job *parked* (delayed for decades, so nothing can run it) and `confirm_put`s it: in
one transaction, and only while the claim still has the feeder's generation, the batch is
running and the record still waits, the record gets its queueID. Only then is the job kicked
to ready, and the claim row deleted. A claim left behind by a feeder that died is taken over
(`take_over` raises its generation, so the old feeder can no longer confirm): see
bystroq.ops.batches.feeder.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from bystroq.config import DEFAULT_PRIORITY
from bystroq.errors import DuplicateItem
from bystroq.records import model
from bystroq.records.database import Cursor, retry_conflicts
from bystroq.records.model import ACTIVE_STATES, Record
from bystroq.records.sql import SQLStore

BatchState = Literal["running", "completed", "failed", "cancelled"]
ErrorPolicy = Literal["continue", "stop"]

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
    priority: int = DEFAULT_PRIORITY
    state: BatchState = "running"
    reason: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    # server -> the highest queueID put for this batch there (below any later put's).
    watermarks: dict[str, int] = msgspec.field(default_factory=dict)


class Claim(msgspec.Struct, kw_only=True, frozen=True):
    """An item being put: only a feeder holding the claim's current `gen` may confirm it."""

    batch_id: str
    n: int
    gen: int
    submission_id: str
    body: str
    claimed_at: float  # or confirmed at, once `queue_id` is set
    put_after: dict[str, int]  # server -> an id below that of any job put for this claim
    queue_id: int | None = None  # the confirmed put (not yet kicked to ready)
    server: str | None = None


class Store(SQLStore):
    """The records store, with batches."""

    @retry_conflicts
    def create_batch(self, batch: Batch, items: Iterable[tuple[int, str, bytes]]) -> None:
        """Write the batch and its items (position, submissionID, job body) in one
        transaction; DuplicateItem (and nothing written) if two share a submissionID."""
        with self.transaction() as cur:
            self._execute(cur, f"INSERT INTO bystroq_batches ({', '.join(_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(_COLUMNS))})", _batch_row(batch))
            cur.executemany(
                self._sql("INSERT INTO bystroq_batch_items (batch_id, n, submission_id, body)"
                          " VALUES (?, ?, ?, ?)"),
                ((batch.batch_id, n, sid, body.decode()) for n, sid, body in items),
            )
            twice = self._execute(cur, "SELECT submission_id FROM bystroq_batch_items WHERE "
                                  "batch_id = ? GROUP BY submission_id HAVING COUNT(*) > 1 "
                                  "LIMIT 1", (batch.batch_id,)).fetchone()
            if twice is not None:
                raise DuplicateItem(twice[0])

    def get_batch(self, batch_id: str) -> Batch | None:
        batches = self._batches("batch_id = ?", (batch_id,))
        return batches[0] if batches else None

    def list_batches(self, limit: int = 50) -> list[Batch]:
        return self._batches("1 = 1 ORDER BY created_at DESC LIMIT ?", (limit,))

    def count_batches_by_state(self) -> dict[str, int]:
        """Number of batches in each state."""
        with self.transaction() as cur:
            rows = self._execute(
                cur, "SELECT state, COUNT(*) FROM bystroq_batches GROUP BY state", ()
            ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def running_batches(self) -> list[Batch]:
        return self._batches("state = ? ORDER BY created_at", ("running",))

    def _batches(self, where: str, params: Sequence[object]) -> list[Batch]:
        with self.transaction() as cur:
            rows = self._execute(
                cur, f"SELECT {', '.join(_COLUMNS)} FROM bystroq_batches WHERE {where}", params
            ).fetchall()
        return [_batch(row) for row in rows]

    @retry_conflicts
    def claim_batch_items(self, batch_id: str, count: int) -> list[Claim]:
        """Claim the next `count` items of a running batch, in order."""
        now = time.time()
        with self.transaction() as cur:
            row = self._execute(cur, "SELECT fed, total, state, category, watermarks FROM "
                                "bystroq_batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None or row[2] != "running":
                return []
            fed, total, category, marks = int(row[0]), int(row[1]), row[3], row[4]
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
                cur, "SELECT n, submission_id, body FROM bystroq_batch_items WHERE "
                "batch_id = ? AND n >= ? AND n < ? ORDER BY n", (batch_id, fed, fed + take),
            ).fetchall()
            existing = self._load_ids(cur, [sid for _, sid, _ in items])
            records = []
            for _, sid, body in items:
                record = existing.get(sid)
                if record is None:
                    record = Record(submission_id=sid, category=category, submitted_at=now,
                                    updated_at=now)
                else:
                    model.resubmitting(record, now)
                record.batch, record.body = batch_id, body
                records.append(record)
            self._save(cur, records)
            # The ids put for this batch so far are below any id put for these claims.
            cur.executemany(self._sql(
                "INSERT INTO bystroq_batch_claims (batch_id, n, gen, claimed_at, put_after)"
                " VALUES (?, ?, 0, ?, ?)"), [(batch_id, n, now, marks) for n, _, _ in items])
            put_after = _WATERMARKS.decode(marks)
            return [Claim(batch_id=batch_id, n=n, gen=0, submission_id=sid, body=body,
                          claimed_at=now, put_after=put_after) for n, sid, body in items]

    @retry_conflicts
    def confirm_put(self, claim: Claim, queue_id: int, server: str) -> bool:
        """Record the claim's parked job as put; False if the claim is no longer this
        generation's, or the batch or the item was cancelled (the job must then go)."""
        now = time.time()
        with self.transaction() as cur:
            # Locks the batch row: a cancel that ends the batch waits, then sees the queueID.
            if not self._execute(cur, "UPDATE bystroq_batches SET state = state WHERE "
                                 "batch_id = ? AND state = 'running'",
                                 (claim.batch_id,)).rowcount:
                self._drop_claim(cur, claim)
                return False
            sid = claim.submission_id
            record = self._load_ids(cur, [sid]).get(sid)
            if record is None or record.state != "queued" or record.queue_id is not None:
                self._drop_claim(cur, claim)  # cancelled (or put) while it was being put
                return False
            if not self._execute(
                cur, "UPDATE bystroq_batch_claims SET queue_id = ?, server = ?, claimed_at = ?"
                " WHERE batch_id = ? AND n = ? AND gen = ? AND queue_id IS NULL",
                (queue_id, server, now, claim.batch_id, claim.n, claim.gen),
            ).rowcount:
                return False  # another feeder took the claim over
            model.queued(record, queue_id, server, now)
            self._save(cur, [record])
            marks = _WATERMARKS.decode(self._execute(
                cur, "SELECT watermarks FROM bystroq_batches WHERE batch_id = ?",
                (claim.batch_id,)).fetchone()[0])
            if marks.get(server, 0) < queue_id:
                marks[server] = queue_id
                self._execute(cur, "UPDATE bystroq_batches SET watermarks = ? WHERE "
                              "batch_id = ?", (msgspec.json.encode(marks).decode(),
                                               claim.batch_id))
            return True

    @retry_conflicts
    def take_over(self, claim: Claim) -> Claim | None:
        """The claim under a new generation (its old holder can no longer confirm it);
        None if it was confirmed or taken over meanwhile."""
        now = time.time()
        with self.transaction() as cur:
            taken = self._execute(
                cur, "UPDATE bystroq_batch_claims SET gen = ?, claimed_at = ? WHERE "
                "batch_id = ? AND n = ? AND gen = ? AND queue_id IS NULL",
                (claim.gen + 1, now, claim.batch_id, claim.n, claim.gen),
            ).rowcount
        return msgspec.structs.replace(claim, gen=claim.gen + 1, claimed_at=now) if taken else None

    @retry_conflicts
    def release_claims(self, claims: Sequence[Claim]) -> None:
        """The claims' jobs are kicked to ready (or gone): the claims are done."""
        with self.transaction() as cur:
            for claim in claims:
                self._drop_claim(cur, claim)

    def _drop_claim(self, cur: Cursor, claim: Claim) -> None:
        self._execute(cur, "DELETE FROM bystroq_batch_claims WHERE batch_id = ? AND n = ? "
                      "AND gen = ?", (claim.batch_id, claim.n, claim.gen))

    def stale_claims(self, before: float) -> list[Claim]:
        """Claims not moved on since `before`: their feeder may have died."""
        with self.transaction() as cur:
            rows = self._execute(
                cur, "SELECT c.batch_id, c.n, c.gen, i.submission_id, i.body, c.claimed_at, "
                "c.put_after, c.queue_id, c.server FROM bystroq_batch_claims c JOIN "
                "bystroq_batch_items i ON i.batch_id = c.batch_id AND i.n = c.n "
                "WHERE c.claimed_at < ? ORDER BY c.claimed_at, c.n", (before,),
            ).fetchall()
        return [Claim(batch_id=r[0], n=int(r[1]), gen=int(r[2]), submission_id=r[3], body=r[4],
                      claimed_at=float(r[5]), put_after=_WATERMARKS.decode(r[6]),
                      queue_id=None if r[7] is None else int(r[7]), server=r[8])
                for r in rows]

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

    @retry_conflicts
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
