"""Why a queued submission is not running yet, asked of its server and the records store.

One answer per cause found: its server does not answer; the job is delayed until a time
(a retry's backoff, or a batch's parked put); its tube is paused until a time; no worker
watches its tube on that server; its batch is at its concurrency limit; or it is simply
ready behind others. Several may hold at once (paused and unwatched).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import greenstalk

from bystroq.config import LoadedConfig, parse_address
from bystroq.records.model import Record
from bystroq.records.store import BatchStore
from bystroq.servers import CONNECTION_ERRORS, Connection, Server

WAITING_STATES = frozenset({"queued", "unknown", "retrying"})


@dataclass(frozen=True)
class Cause:
    """One reason a job waits: `kind` for code, `text` for people, `until` when it ends."""

    kind: str  # server-down, gone, delayed, paused, unwatched, batch-limit, ready, reserved,
    #            buried, no-job
    text: str
    until: float | None = None


def why_waiting(config: LoadedConfig, store: BatchStore, record: Record,
                now: float | None = None) -> list[Cause]:
    """What keeps `record` from running (empty when it is not waiting)."""
    if record.state not in WAITING_STATES:
        return []
    now = time.time() if now is None else now
    causes = _on_server(config, record, now)
    if record.batch is not None:
        batch = store.get_batch(record.batch)
        if batch is not None and batch.state == "running":
            in_flight = store.batch_in_flight(batch.batch_id)
            if in_flight >= batch.concurrency:
                causes.append(Cause("batch-limit", (
                    f"its batch {batch.batch_id} has {in_flight} jobs in flight, at its "
                    f"concurrency limit of {batch.concurrency}")))
    return causes


def _on_server(config: LoadedConfig, record: Record, now: float) -> list[Cause]:
    if record.server is None or record.queue_id is None:
        return [Cause("no-job", "it has no job on a server yet (not put, or its put was "
                                "never answered)")]
    host, port = parse_address(record.server)
    conn = Connection(Server(host, port), io_timeout_s=2.0)
    try:
        client = conn.client
        try:
            job = client.stats_job(record.queue_id)
        except greenstalk.NotFoundError:
            return [Cause("gone", f"job {record.queue_id} is no longer on {record.server} "
                                  "(just reserved and finished, or deleted)")]
        tube = str(job["tube"])
        stats: dict[str, object] = {}
        with contextlib.suppress(greenstalk.NotFoundError):
            stats.update(client.stats_tube(tube))
        return _causes(record, str(job["state"]), int(job.get("time-left", 0)), tube,
                       stats, now)
    except CONNECTION_ERRORS as exc:
        return [Cause("server-down", f"its server {record.server} does not answer "
                                     f"({str(exc) or type(exc).__name__})")]
    finally:
        conn.close()


def _causes(record: Record, state: str, time_left: int, tube: str,
            stats: dict[str, object], now: float) -> list[Cause]:
    causes: list[Cause] = []
    where = f"tube {tube} on {record.server}"
    if state == "delayed":
        causes.append(Cause("delayed", f"job {record.queue_id} is delayed for {time_left} s",
                            now + time_left))
    elif state == "reserved":
        causes.append(Cause("reserved", "a worker has reserved it; its started event is "
                                        "not recorded yet"))
    elif state == "buried":
        causes.append(Cause("buried", f"job {record.queue_id} is buried: kick it to run it"))
    pause_left = int(str(stats.get("pause-time-left", 0)))
    if pause_left > 0:
        causes.append(Cause("paused", f"{where} is paused for {pause_left} s more",
                            now + pause_left))
    if int(str(stats.get("current-watching", 0))) == 0:
        causes.append(Cause("unwatched", f"no worker watches {where}"))
    if state == "ready" and not causes:
        ready = int(str(stats.get("current-jobs-ready", 0)))
        causes.append(Cause("ready", f"ready, with {ready} jobs ready on {where}: waiting "
                                     "for a free worker"))
    return causes
