"""Retry: submit a failed or cancelled submission again, as a new attempt."""

from __future__ import annotations

import contextlib

import greenstalk

from bystroq.config import LoadedConfig, parse_address
from bystroq.errors import BystroqError
from bystroq.producer import Producer, Submitted
from bystroq.records.store import RecordStore
from bystroq.servers import CONNECTION_ERRORS

RETRYABLE = ("failed", "cancelled")


def retry_submission(config: LoadedConfig, store: RecordStore, submission_id: str) -> Submitted:
    """Put the submission's job again with the same submissionID; its buried job (a dead
    letter of the last run) is deleted so that a later kick cannot run it twice."""
    record = store.get(submission_id)
    if record is None:
        raise BystroqError(f"no submission {submission_id!r} in {store.url}")
    if record.state not in RETRYABLE:
        raise BystroqError(f"{submission_id}: is {record.state}; only a failed or cancelled "
                           "submission can be retried")
    if record.body is None:
        raise BystroqError(f"{submission_id}: its job body was not recorded (it was not "
                           "submitted with a records store); submit it again with "
                           "`bystroq submit`")
    old_server, old_queue_id = record.server, record.queue_id
    store.resubmitting(submission_id)
    with Producer(config, recorder=store) as producer:
        handle = producer.submit(record.category, record.body.encode(), batch=record.batch)
    if old_server is not None and old_queue_id is not None:
        _delete_if_buried(old_server, old_queue_id)
    return handle


def _delete_if_buried(server: str, queue_id: int) -> None:
    with contextlib.suppress(*CONNECTION_ERRORS, greenstalk.NotFoundError), greenstalk.Client(
        parse_address(server), encoding=None
    ) as client:
        if client.stats_job(queue_id)["state"] == "buried":
            client.delete(queue_id)
