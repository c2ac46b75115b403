"""The live-workers table: the newest heartbeat of each worker, as the consumer read it.

A worker's row is replaced only by a beat at least as new as the one it holds (beats come
from every server, in any order). Whether a worker is alive is not stored: it is silent
for three of its intervals, or it said `stopped` (bystroq.records.views.worker_view).
Rows of workers not heard of for KEEP_GONE_S are deleted as new beats are saved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from bystroq.control import Heartbeat, HeldJob
from bystroq.records.database import Database, retry_conflicts
from bystroq.records.rows import storable

KEEP_GONE_S = 24 * 3600.0

_COLUMNS = ("worker_id", "host", "pid", "category", "state", "slots_busy", "slots_total",
            "isolation", "version", "started_at", "last_seen_at", "interval_s", "jobs")
_ENCODE = msgspec.json.Encoder().encode
_DECODE_JOBS = msgspec.json.Decoder(list[HeldJob])


class WorkerRow(msgspec.Struct, kw_only=True, frozen=True):
    """A worker as its newest heartbeat described it."""

    worker_id: str
    host: str
    pid: int
    category: str
    state: str  # what the worker last said: running, quiet, stopping, stopped
    slots_busy: int
    slots_total: int
    isolation: str
    version: str
    started_at: float
    last_seen_at: float  # the beat's own time (the worker's clock)
    interval_s: float
    jobs: list[HeldJob]


def _row(beat: Heartbeat) -> tuple[Any, ...]:
    return (storable(beat.worker), storable(beat.host), beat.pid, storable(beat.category),
            beat.state, beat.slotsBusy, beat.slotsTotal, storable(beat.isolation),
            storable(beat.version), beat.startedAt, beat.at, beat.intervalS,
            storable(_ENCODE(beat.jobs).decode()))


def _worker(row: Sequence[Any]) -> WorkerRow:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["jobs"] = _DECODE_JOBS.decode(values["jobs"])
    return WorkerRow(**values)


class WorkerTable(Database):
    """The live-workers table of a records store."""

    @retry_conflicts
    def save_beats(self, beats: Sequence[Heartbeat], now: float | None = None) -> None:
        """Keep each worker's newest beat (one transaction); forget long-gone workers."""
        newest: dict[str, Heartbeat] = {}
        for beat in beats:
            if beat.worker not in newest or newest[beat.worker].at <= beat.at:
                newest[beat.worker] = beat
        now = time.time() if now is None else now
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
        with self.transaction() as cur:
            for beat in sorted(newest.values(), key=lambda b: b.worker):
                self._execute(
                    cur, f"INSERT INTO bystroq_workers ({', '.join(_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (worker_id) DO UPDATE "
                    f"SET {updates} WHERE bystroq_workers.last_seen_at <= "
                    f"excluded.last_seen_at", _row(beat))
            self._execute(cur, "DELETE FROM bystroq_workers WHERE last_seen_at < ?",
                          (now - KEEP_GONE_S,))

    def workers(self, category: str | None = None) -> list[WorkerRow]:
        """Every worker in the table (gone ones too), by category and id."""
        where, params = ("WHERE category = ?", (category,)) if category else ("", ())
        with self.transaction() as cur:
            rows = self._execute(cur, f"SELECT {', '.join(_COLUMNS)} FROM bystroq_workers "
                                      f"{where} ORDER BY category, worker_id",
                                 params).fetchall()
        return [_worker(row) for row in rows]

    def worker(self, worker_id: str) -> WorkerRow | None:
        """One worker by its id, if the table has it."""
        with self.transaction() as cur:
            row = self._execute(cur, f"SELECT {', '.join(_COLUMNS)} FROM bystroq_workers "
                                     f"WHERE worker_id = ?", (worker_id,)).fetchone()
        return None if row is None else _worker(row)
