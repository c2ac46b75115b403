"""Cursor pages of submissions, shared by `GET /v1/submissions` and the dashboard: ordered
by submissionID, a page continues after the last one seen (bystroq.records.feeds)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from bystroq.records import feeds
from bystroq.records.model import Record
from bystroq.records.sql import SQLStore
from bystroq.web.problems import FieldError, Problem

_CURSOR = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Filters:
    """What a page of submissions is filtered by (None: not filtered)."""

    state: str | None = None
    category: str | None = None
    batch: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None


def encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The submissionID a cursor continues after; a 422 Problem for one we never gave."""
    try:
        if not _CURSOR.fullmatch(cursor):
            raise ValueError(cursor)
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(422, "cursor is not one this API returned",
                      [FieldError("query.cursor", "expected a nextCursor value")]) from None


def submission_page(store: SQLStore, filters: Filters, cursor: str | None,
                    limit: int) -> tuple[list[Record], str | None]:
    """Up to `limit` records after the cursor, and the cursor of the next page (None at
    the end)."""
    after = None if cursor is None else decode_cursor(cursor)
    records = feeds.list_page(store, category=filters.category, state=filters.state,
                              batch=filters.batch, since=filters.since, until=filters.until,
                              text=filters.text, after=after, limit=limit + 1)
    more = len(records) > limit
    records = records[:limit]
    return records, encode_cursor(records[-1].submission_id) if more else None
