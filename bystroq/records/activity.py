"""What the dashboard reads and writes besides records: the audit log of its actions, the
jobs finished per minute, and the failed records that may still be buried on a server.

- `record_action` / `actions`: one row per action taken (who, what, on what, when, how
  it went), newest first, by keyset on the time.
- `finished_per_minute`: completed and failed records by the minute they finished, over
  a window (read by the `finished_at` index).
- `failed_page`: failed records of a category, by submissionID after a cursor, optionally
  with text in the id or reason (the dead letters' candidates: a failed job is buried).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from bystroq.records.feeds import like_pattern, text_match
from bystroq.records.model import Record
from bystroq.records.rows import RECORD_COLUMNS, row_record
from bystroq.records.sql import SQLStore


class Action(msgspec.Struct, kw_only=True, frozen=True):
    """One action taken through the dashboard."""

    at: float
    who: str  # the token's name ("local" without tokens)
    action: str  # e.g. "cancel", "queue.pause", "dead.kick-all"
    target: str  # a submission, batch, tube or job
    detail: str  # the parameters, as one line
    outcome: str  # what happened, as one line


def _sql(store: SQLStore, text: str) -> str:
    mark = store.backend.placeholder
    return text if mark == "?" else text.replace("?", mark)


def record_action(store: SQLStore, action: Action) -> None:
    with store.transaction() as cur:
        cur.execute(_sql(store, "INSERT INTO bystroq_audit (at, who, action, target, detail, "
                                "outcome) VALUES (?, ?, ?, ?, ?, ?)"),
                    (action.at, action.who, action.action, action.target, action.detail,
                     action.outcome))


def actions(store: SQLStore, before: float | None = None, limit: int = 100) -> list[Action]:
    """Actions newest first, those before `before` (a page's last `at`)."""
    where, params = ("WHERE at < ?", [before]) if before is not None else ("", [])
    with store.transaction() as cur:
        cur.execute(_sql(store, f"SELECT at, who, action, target, detail, outcome FROM "
                                f"bystroq_audit {where} ORDER BY at DESC LIMIT ?"),
                    (*params, limit))
        rows = cur.fetchall()
    return [Action(at=r[0], who=r[1], action=r[2], target=r[3], detail=r[4], outcome=r[5])
            for r in rows]


def finished_per_minute(store: SQLStore, minutes: int = 60, now: float | None = None,
                        ) -> dict[str, list[int]]:
    """Completed and failed records per minute over the last `minutes`, oldest first."""
    now = time.time() if now is None else now
    end = (int(now) // 60 + 1) * 60
    start = end - minutes * 60
    out = {"completed": [0] * minutes, "failed": [0] * minutes}
    with store.transaction() as cur:
        cur.execute(_sql(store, "SELECT finished_at, state FROM bystroq_records "
                                "WHERE finished_at >= ? AND finished_at < ?"), (start, end))
        for finished_at, state in cur.fetchall():
            if state in out:
                out[state][min(int((finished_at - start) // 60), minutes - 1)] += 1
    return out


def _failed_where(store: SQLStore, category: str, text: str | None,
                  ) -> tuple[list[str], list[Any]]:
    where = ["state = 'failed'", "category = ?"]
    params: list[Any] = [category]
    if text:
        pattern = like_pattern(text)
        where.append(text_match(store))
        params += [pattern, pattern]
    return where, params


def failed_page(store: SQLStore, category: str, text: str | None = None,
                after: str | None = None, limit: int = 50) -> list[Record]:
    """Failed records of `category` by submissionID, after `after`, optionally with
    `text` in the submissionID or reason."""
    where, params = _failed_where(store, category, text)
    if after is not None:
        where.append("submission_id > ?")
        params.append(after)
    query = (f"SELECT {', '.join(RECORD_COLUMNS)} FROM bystroq_records WHERE "
             f"{' AND '.join(where)} ORDER BY submission_id LIMIT ?")
    with store.transaction() as cur:
        cur.execute(_sql(store, query), (*params, limit))
        return [row_record(row) for row in cur.fetchall()]


def count_failed(store: SQLStore, category: str, text: str | None = None) -> int:
    """How many records `failed_page` would go through."""
    where, params = _failed_where(store, category, text)
    with store.transaction() as cur:
        cur.execute(_sql(store, f"SELECT COUNT(*) FROM bystroq_records WHERE "
                                f"{' AND '.join(where)}"), params)
        row = cur.fetchone()
    return int(row[0])
