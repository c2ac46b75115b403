"""The batch feeder: keeps each running batch's jobs in flight up to its concurrency.

It runs inside every events consumer, after each round of events: a finished job frees a
slot, the next item is claimed in the store, then put. Claiming first means no two feeders
put the same item. A feeder killed between claim and put leaves a claim with no queueID;
after `grace_s`, another round looks for the job on the servers (by body, among the ids put
since the batch's watermark), and puts it only if it is not there and no event of it has
arrived: nothing lost, nothing put twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from bystroq.config import LoadedConfig
from bystroq.producer import Producer
from bystroq.records import Batch, Record, Store
from bystroq.servers import CONNECTION_ERRORS, Connection, next_job_id, peek_many

DEFAULT_GRACE_S = 10.0
PEEK_CHUNK = 1000


class Feeder:
    """Puts the next jobs of running batches (of the configured categories)."""

    def __init__(
        self, config: LoadedConfig, store: Store, producer: Producer,
        grace_s: float = DEFAULT_GRACE_S, drain: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.producer = producer
        self.grace_s = grace_s
        self.drain = drain  # applies every ready event; called before a lost put is redone
        self.categories = set(config.config.beanstalkd.tubes)
        self.log = structlog.get_logger("bystroq.feeder")

    def step(self) -> int:
        """One pass over the running batches; returns how many jobs were put."""
        put = 0
        for batch in self.store.running_batches():
            if batch.category in self.categories:
                put += self.feed(batch)
        return put

    def feed(self, batch: Batch) -> int:
        """Recover lost claims, apply the error policy, put jobs up to the concurrency."""
        self._recover(batch)
        if batch.error_policy == "stop" and self._stopped_on_failure(batch):
            return 0
        in_flight = self.store.batch_in_flight(batch.batch_id)
        put = 0
        if in_flight < batch.concurrency and batch.fed < batch.total:
            for record in self.store.claim_batch_items(batch.batch_id,
                                                       batch.concurrency - in_flight):
                if not self._put(batch, record):
                    break  # servers down: the claim is recovered on a later round
                put += 1
        elif in_flight == 0 and batch.fed >= batch.total:
            self._finish(batch)
        return put

    def _put(self, batch: Batch, record: Record) -> bool:
        assert record.body is not None
        try:
            handle = self.producer.submit(batch.category, record.body.encode(),
                                          priority=batch.priority)
        except Exception as exc:
            self.log.warning("batch job not put; will retry", batch=batch.batch_id,
                             submissionID=record.submission_id, error=str(exc))
            return False
        server = handle.server.name
        self.store.record_queued(record.submission_id, batch.category, handle.job_id, server,
                                 batch=batch.batch_id)
        self.store.note_puts(batch.batch_id, server, handle.job_id)
        return True

    def _finish(self, batch: Batch) -> None:
        counts = self.store.count_by_state(batch.batch_id)
        failed = counts.get("failed", 0) + counts.get("cancelled", 0)
        if failed:
            reason = f"{failed} of {batch.total} jobs did not complete"
            self.store.finish_batch(batch.batch_id, "failed", reason)
        else:
            self.store.finish_batch(batch.batch_id, "completed", None)
        self.log.info("batch finished", batch=batch.batch_id, **counts)

    def _stopped_on_failure(self, batch: Batch) -> bool:
        failures = self.store.batch_records(batch.batch_id, ["failed"], limit=1)
        if not failures:
            return False
        from bystroq.batches import cancel_active

        first = failures[0]
        reason = f"stopped after the first failure ({first.submission_id}: {first.reason})"
        if self.store.finish_batch(batch.batch_id, "failed", reason):
            done = cancel_active(self.store, batch.batch_id, "batch stopped on a failure",
                                 states=("queued",))
            self.log.warning("batch stopped", batch=batch.batch_id, reason=reason, cancelled=done)
        return True

    # -- claims whose feeder died between claim and put --------------------------------

    def _recover(self, batch: Batch) -> None:
        lost = self.store.unconfirmed_claims(batch.batch_id, time.time() - self.grace_s)
        if not lost:
            return
        found = self._find_on_servers(batch, {r.body.encode() for r in lost if r.body})
        if found is None:
            return  # a server is unreachable: it may hold the job; try again later
        if self.drain is not None:
            self.drain()  # a job run and deleted since has left its events: apply them
        for record in self.store.unconfirmed_claims(batch.batch_id, time.time() - self.grace_s):
            assert record.body is not None
            where = found.get(record.body.encode())
            if where is not None:
                self.store.record_queued(record.submission_id, batch.category, where[1],
                                         where[0], batch=batch.batch_id)
            else:
                self.log.info("re-putting a batch job its feeder never put",
                              batch=batch.batch_id, submissionID=record.submission_id)
                self._put(batch, record)

    def _find_on_servers(
        self, batch: Batch, bodies: set[bytes]
    ) -> dict[bytes, tuple[str, int]] | None:
        """body -> (server, queueID) for the bodies among the jobs put since the watermark."""
        found: dict[bytes, tuple[str, int]] = {}
        for server in self.producer.servers:
            conn = Connection(server)
            try:
                end = next_job_id(conn)
                for start in range(batch.watermarks.get(server.name, 0) + 1, end, PEEK_CHUNK):
                    ids = range(start, min(start + PEEK_CHUNK, end))
                    for job_id, body in peek_many(conn, ids).items():
                        if body in bodies:
                            found[body] = (server.name, job_id)
            except CONNECTION_ERRORS:
                return None
            finally:
                conn.close()
        return found
