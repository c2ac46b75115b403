"""Records and events as rows of the SQL tables, and back."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from bystroq.records.model import IncomingEvent, Record

RECORD_COLUMNS = tuple(Record.__struct_fields__)
_JSON_COLUMNS = frozenset({"messages", "result", "prior_runs"})
_BOOL_COLUMNS = frozenset({"attempt_done"})
_ENCODE = msgspec.json.Encoder().encode


def lock_key(submission_id: str) -> int:
    """A signed 64-bit number for a submission id (PostgreSQL's advisory lock key)."""
    digest = hashlib.blake2b(submission_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def storable(text: str) -> str:
    """Text a database can hold: NUL (which PostgreSQL refuses in text) written as \\x00."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


_JSON_INDEXES = tuple(i for i, c in enumerate(RECORD_COLUMNS) if c in _JSON_COLUMNS)
_BOOL_INDEXES = tuple(i for i, c in enumerate(RECORD_COLUMNS) if c in _BOOL_COLUMNS)


def record_row(record: Record) -> tuple[Any, ...]:
    """A record as the row's values, in RECORD_COLUMNS order."""
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


# The row of a new record, filled in by new_queued_row.
_NEW = record_row(Record(submission_id="", category=""))
_AT = {c: RECORD_COLUMNS.index(c) for c in (
    "submission_id", "category", "queue_id", "server", "batch", "submitted_at",
    "updated_at", "body")}


def new_queued_row(submission_id: str, category: str, queue_id: int, server: str,
                   batch: str | None, at: float, body: str | None) -> tuple[Any, ...]:
    """The row of a record created by its job's put: what `model.queued` makes of a new
    record (`record_row(record)`), made without the record (tests hold the two equal)."""
    row = list(_NEW)
    at_ = _AT
    row[at_["submission_id"]] = storable(submission_id)
    row[at_["category"]] = storable(category)
    row[at_["queue_id"]], row[at_["server"]] = queue_id, storable(server)
    row[at_["batch"]] = None if batch is None else storable(batch)
    row[at_["submitted_at"]] = row[at_["updated_at"]] = at
    row[at_["body"]] = None if body is None else storable(body)
    return tuple(row)


_JSON_DECODE = msgspec.json.Decoder()


def row_record(row: Sequence[Any]) -> Record:
    values: dict[str, Any] = {}
    for column, value in zip(RECORD_COLUMNS, row, strict=True):
        if column in _JSON_COLUMNS and value is not None:
            value = _JSON_DECODE.decode(value)
        elif column in _BOOL_COLUMNS:
            value = bool(value)
        values[column] = value
    return Record(**values)


def event_row(event: IncomingEvent, submission_id: str, applied: bool) -> tuple[Any, ...]:
    worker = None if event.worker is None else storable(event.worker)
    return (event.key, submission_id, event.category, event.server, event.queue_id,
            event.attempt, event.seq, event.event, worker, event.at, int(applied),
            _ENCODE(event.body).decode())
