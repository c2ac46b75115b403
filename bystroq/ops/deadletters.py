"""Dead letters: a category's buried jobs, found through its failed records, and kicking or
deleting them in bulk, a chunk at a time, with progress.

beanstalkd shows only the oldest buried job of a tube, so the list comes from the records
store (a failed job is buried) and each job's state and body are asked of its server.
Acting on all of a tube's buried jobs needs no records (the oldest, again and again, so
undecodable jobs go too); acting on those matching a filter goes through the records.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import greenstalk

from bystroq.config import LoadedConfig, parse_address
from bystroq.ops.servers import TubeStats, tube_stats
from bystroq.records import activity
from bystroq.records.model import Record
from bystroq.records.store import Store
from bystroq.servers import CONNECTION_ERRORS, Connection, Server, servers_of

CHUNK = 200


class BulkAction(str, enum.Enum):
    KICK = "kick"
    DELETE = "delete"


@dataclass(frozen=True)
class DeadLetter:
    """A failed record and its job as the server has it now."""

    record: Record
    state: str  # buried, ready, delayed, reserved, gone, or server-down
    body: str | None  # the job's body, while it is on the server


def _jobs_on(server: str, ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """State and body of each job id on `server`."""
    host, port = parse_address(server)
    conn = Connection(Server(host, port), io_timeout_s=2.0)
    out: dict[int, tuple[str, str | None]] = {}
    try:
        client = conn.client
        for job_id in ids:
            try:
                state = str(client.stats_job(job_id)["state"])
                body = client.peek(job_id).body.decode(errors="replace")
            except greenstalk.NotFoundError:
                state, body = "gone", None
            out[job_id] = (state, body)
    except CONNECTION_ERRORS:
        return {job_id: ("server-down", None) for job_id in ids}
    finally:
        conn.close()
    return out


def dead_letters(store: Store, category: str, text: str | None = None,
                 after: str | None = None, limit: int = 50) -> list[DeadLetter]:
    """Failed records of `category` (by submissionID after `after`), each with its job."""
    records = activity.failed_page(store, category, text, after, limit)
    by_server: dict[str, list[int]] = {}
    for record in records:
        if record.server is not None and record.queue_id is not None:
            by_server.setdefault(record.server, []).append(record.queue_id)
    jobs = {server: _jobs_on(server, ids) for server, ids in by_server.items()}
    out = []
    for record in records:
        state, body = "gone", None
        if record.server is not None and record.queue_id is not None:
            state, body = jobs[record.server][record.queue_id]
        out.append(DeadLetter(record, state, body))
    return out


def count_dead(config: LoadedConfig, store: Store, category: str, tube: str,
               text: str | None) -> int:
    """How many jobs a bulk action would go through: every buried job of `tube` (no
    `text`), else the failed records of `category` matching it."""
    if text:
        return activity.count_failed(store, category, text)
    return sum(row.buried for row in tube_stats(config, [tube]) if isinstance(row, TubeStats))


@dataclass
class BulkProgress:
    """How far a bulk action got (updated by its thread; read by anyone)."""

    total: int
    done: int = 0  # jobs looked at
    acted: int = 0  # kicked or deleted
    skipped: int = 0  # no longer buried (kicked, deleted or finished meanwhile)
    errors: int = 0  # a server did not answer
    finished: bool = False


def run_bulk(config: LoadedConfig, store: Store, category: str, tube: str,
             action: BulkAction, text: str | None, progress: BulkProgress,
             stop: threading.Event | None = None,
             on_chunk: Callable[[BulkProgress], None] | None = None) -> BulkProgress:
    """Kick or delete the dead letters `count_dead` counted, CHUNK at a time, updating
    `progress` as it goes; stops early when `stop` is set."""
    try:
        if text:
            for server, ids in _matching(store, category, text):
                if stop is not None and stop.is_set():
                    break
                _act(server, tube, ids, action, progress)
                if on_chunk is not None:
                    on_chunk(progress)
        else:
            for each in servers_of(config.addresses):
                _act_all(each, tube, action, progress, stop, on_chunk)
    finally:
        progress.finished = True
    return progress


def _act_all(server: Server, tube: str, action: BulkAction, progress: BulkProgress,
             stop: threading.Event | None,
             on_chunk: Callable[[BulkProgress], None] | None) -> None:
    """Every buried job of `tube` on `server`, the oldest first, until none is left."""
    conn = Connection(server, use=tube, io_timeout_s=5.0)
    try:
        client = conn.client
        while stop is None or not stop.is_set():
            for _ in range(CHUNK):
                try:
                    job = client.peek_buried()
                except greenstalk.NotFoundError:
                    return
                progress.done += 1
                try:
                    if action is BulkAction.KICK:
                        client.kick_job(job)
                    else:
                        client.delete(job)
                    progress.acted += 1
                except greenstalk.NotFoundError:
                    progress.skipped += 1
            if on_chunk is not None:
                on_chunk(progress)
    except CONNECTION_ERRORS:
        progress.errors += 1
    finally:
        conn.close()
        if on_chunk is not None:
            on_chunk(progress)


def _matching(store: Store, category: str, text: str) -> Iterator[tuple[str, list[int]]]:
    after = None
    while True:
        records = activity.failed_page(store, category, text, after, CHUNK)
        if not records:
            return
        after = records[-1].submission_id
        by_server: dict[str, list[int]] = {}
        for record in records:
            if record.server is not None and record.queue_id is not None:
                by_server.setdefault(record.server, []).append(record.queue_id)
        yield from by_server.items()


def _act(server: str, tube: str, ids: list[int], action: BulkAction,
         progress: BulkProgress) -> None:
    host, port = parse_address(server)
    conn = Connection(Server(host, port), io_timeout_s=5.0)
    try:
        client = conn.client
        for job_id in ids:
            progress.done += 1
            try:
                job = client.stats_job(job_id)
                if job["tube"] != tube or job["state"] != "buried":
                    progress.skipped += 1
                    continue
                if action is BulkAction.KICK:
                    client.kick_job(job_id)
                else:
                    client.delete(job_id)
                progress.acted += 1
            except greenstalk.NotFoundError:
                progress.skipped += 1
    except CONNECTION_ERRORS:
        progress.errors += 1
    finally:
        conn.close()
