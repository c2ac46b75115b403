"""The batch feeder: keeps each running batch's jobs in flight up to its concurrency.

It runs beside every events consumer (bystroq.ops.consume), after each round of events:
a finished job frees a slot, the next item is claimed in the store, then put. Any number
of feeders may run at once, and any of them may be killed at any point; still no item runs
twice and none is lost, because a job cannot run before its put is recorded:

1. claim: the store hands each item to one feeder, as a claim of generation 0;
2. put *parked*: with a delay of decades that encodes the claim (`park_delay`), so no
   worker can reserve it;
3. confirm: one transaction records the queueID, only while the claim is still of this
   generation (and the batch and item are not cancelled); otherwise the feeder deletes
   its parked job;
4. kick the job to ready, then drop the claim.

A claim that has not moved on for `grace_s` belonged to a feeder that died (or stalls):
- unconfirmed (died in 1-3): another feeder takes it over (its generation goes up, so the
  old feeder can no longer confirm), deletes the parked jobs of earlier generations it
  finds on the servers (by body and delay, among the ids put since the claim), and puts
  the item again. A parked job it misses (its server is down) can never be confirmed, so
  it never runs: the search only tidies up, and a server away does not stall the batch.
- confirmed (died in 4): its job is kicked if it is still parked.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence

import msgspec
import structlog

from bystroq.config import LoadedConfig
from bystroq.errors import SubmitIncomplete
from bystroq.ops.batches.cancel import cancel_active
from bystroq.producer import Producer, Submitted
from bystroq.records.batchstore import Batch, Claim
from bystroq.records.store import BatchStore
from bystroq.servers import (
    CONNECTION_ERRORS,
    Connection,
    Reply,
    exchange,
    next_job_id,
    peek_many,
)

DEFAULT_GRACE_S = 10.0
PEEK_CHUNK = 1000
# A parked job's delay: at least 68 years, plus 31 bits naming the claim and generation
# (beanstalkd takes delays up to 2**32 - 1 seconds).
PARK_BASE_S = 2**31


def park_delay(claim: Claim, gen: int | None = None) -> int:
    """The delay a claim's job is parked with (for its own or an earlier generation)."""
    key = f"{claim.batch_id}/{claim.n}/{claim.gen if gen is None else gen}".encode()
    digest = hashlib.blake2b(key, digest_size=4).digest()
    return PARK_BASE_S + (int.from_bytes(digest, "big") & (PARK_BASE_S - 1))


class Feeder:
    """Puts the next jobs of running batches (of the configured categories)."""

    def __init__(
        self, config: LoadedConfig, store: BatchStore, producer: Producer,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.config = config
        self.store = store
        self.producer = producer
        self.grace_s = grace_s
        self.categories = set(config.config.beanstalkd.tubes)
        self.log = structlog.get_logger("bystroq.ops.batches.feeder")
        # For kicking, deleting and finding parked jobs (the producer only puts).
        self._conns = {server.name: Connection(server) for server in producer.servers}

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()

    def step(self) -> int:
        """Recover stale claims, then one pass over the running batches; returns how many
        jobs were put."""
        self._recover()
        put = 0
        for batch in self.store.running_batches():
            if batch.category in self.categories:
                put += self.feed(batch)
        return put

    def feed(self, batch: Batch) -> int:
        """Apply the error policy, put jobs up to the concurrency, finish a done batch."""
        if batch.error_policy == "stop" and self._stopped_on_failure(batch):
            return 0
        in_flight = self.store.batch_in_flight(batch.batch_id)
        if in_flight < batch.concurrency and batch.fed < batch.total:
            claims = self.store.claim_batch_items(batch.batch_id,
                                                  batch.concurrency - in_flight)
            return self._put(batch, claims)
        if in_flight == 0 and batch.fed >= batch.total:
            self._finish(batch)
        return 0

    def last_ids(self) -> dict[str, int]:
        """server -> the id of its latest job (servers that do not answer are left out)."""
        marks = {}
        for name, conn in self._conns.items():
            try:
                marks[name] = next_job_id(conn) - 1
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)
        return marks

    # -- the put: parked, confirmed, kicked --------------------------------------------

    def _put(self, batch: Batch, claims: Sequence[Claim]) -> int:
        """Put the claims' jobs parked, pipelined (one bulk put, each with its claim's
        delay); confirm each one put. A claim whose job was not put, or whose put was
        never answered, is recovered after the grace period."""
        if not claims:
            return 0
        try:
            handles: Sequence[Submitted | None] = self.producer.submit_many(
                batch.category, [claim.body.encode() for claim in claims],
                priority=batch.priority, delay=[park_delay(claim) for claim in claims])
        except SubmitIncomplete as exc:
            handles = exc.submitted
            self.log.warning("batch jobs not put; will retry", batch=batch.batch_id,
                             error=str(exc))
        except Exception as exc:
            self.log.warning("batch jobs not put; will retry", batch=batch.batch_id,
                             error=str(exc))
            return 0  # the claims are recovered after the grace period
        confirmed: list[Claim] = []
        for claim, handle in zip(claims, handles, strict=True):
            if handle is None:
                continue
            server = handle.server.name
            if self.store.confirm_put(claim, handle.job_id, server):
                confirmed.append(msgspec.structs.replace(claim, queue_id=handle.job_id,
                                                         server=server))
            else:
                self._delete(server, handle.job_id, claim)
        self._kick(confirmed)
        return len(confirmed)

    def _kick(self, claims: Sequence[Claim]) -> None:
        """Kick the confirmed jobs to ready; drop the claims of those the server answered."""
        done: list[Claim] = []
        for server, group in _by_server(claims).items():
            replies = self._exchange(server, [b"kick-job %d\r\n" % job_id
                                              for job_id, _ in group])
            if replies is not None:  # NOT_FOUND: cancelled and deleted meanwhile
                done.extend(claim for _, claim in group)
        if done:
            self.store.release_claims(done)

    def _delete(self, server: str, job_id: int, claim: Claim) -> None:
        if self._exchange(server, [b"delete %d\r\n" % job_id]) is None:
            self.log.warning("a parked batch job was not deleted; it cannot run",
                             batch=claim.batch_id, submissionID=claim.submission_id,
                             server=server, queueID=job_id)

    def _exchange(self, server: str, commands: Sequence[bytes]) -> list[Reply] | None:
        """The replies, or None when the server cannot be reached."""
        conn = self._conns.get(server)
        if conn is None or not conn.ready():
            return None  # unknown, or waiting out a backoff: the claims wait for recovery
        if not commands:
            return []
        try:
            return exchange(conn, commands)
        except CONNECTION_ERRORS as exc:
            conn.failed(exc)
            self.log.warning("batch feeder lost a server", server=server, error=str(exc))
            return None

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

        first = failures[0]
        reason = f"stopped after the first failure ({first.submission_id}: {first.reason})"
        if self.store.finish_batch(batch.batch_id, "failed", reason):
            done = cancel_active(self.store, batch.batch_id, "batch stopped on a failure",
                                 states=("queued",))
            self.log.warning("batch stopped", batch=batch.batch_id, reason=reason,
                             cancelled=str(done))
        return True

    # -- claims whose feeder died (or stalls) ------------------------------------------

    def _recover(self) -> None:
        stale = self.store.stale_claims(time.time() - self.grace_s)
        if not stale:
            return
        batches = {b: self.store.get_batch(b) for b in {c.batch_id for c in stale}}
        mine = [c for c in stale if (batch := batches[c.batch_id]) is not None
                and batch.category in self.categories]
        self._kick_parked([c for c in mine if c.queue_id is not None])
        lost = [taken for c in mine if c.queue_id is None
                and (taken := self.store.take_over(c)) is not None]
        if not lost:
            return
        self._delete_earlier_puts(lost)
        for batch_id, claims in _by_batch(lost).items():
            batch = self.store.get_batch(batch_id)
            if batch is None or batch.state != "running":
                self.store.release_claims(claims)
                continue
            self.log.info("re-putting batch jobs whose feeder stopped before confirming",
                          batch=batch_id, submissionIDs=[c.submission_id for c in claims])
            self._put(batch, claims)

    def _kick_parked(self, claims: Sequence[Claim]) -> None:
        """Kick those confirmed jobs that are still parked (their feeder died first)."""
        parked: list[Claim] = []
        answered: list[Claim] = []
        for server, group in _by_server(claims).items():
            replies = self._exchange(server, [b"stats-job %d\r\n" % job_id
                                              for job_id, _ in group])
            if replies is None:
                continue
            for (_, claim), reply in zip(group, replies, strict=True):
                state = _job_state(reply)
                if state == ("delayed", park_delay(claim)):
                    parked.append(claim)
                else:
                    answered.append(claim)
        self._kick(parked)
        if answered:
            self.store.release_claims(answered)

    def _delete_earlier_puts(self, claims: Sequence[Claim]) -> None:
        """Delete the parked jobs of the claims' earlier generations. A server that cannot
        be searched may keep one; it cannot run (never confirmed), so the batch goes on."""
        wanted: dict[bytes, set[int]] = defaultdict(set)
        for claim in claims:
            wanted[claim.body.encode()].update(park_delay(claim, g) for g in range(claim.gen))
        for server in self.producer.servers:
            conn = self._conns[server.name]
            start = min(c.put_after.get(server.name, 0) for c in claims) + 1
            try:
                found = _parked_among(conn, start, next_job_id(conn), wanted)
                if found:
                    exchange(conn, [b"delete %d\r\n" % job_id for job_id in found])
            except CONNECTION_ERRORS as exc:
                conn.failed(exc)
                self.log.warning("cannot search a server for parked batch jobs; a parked "
                                 "copy may stay there (it cannot run)", server=server.name,
                                 error=str(exc), submissionIDs=[c.submission_id for c in claims])


def _parked_among(conn: Connection, start: int, end: int,
                  wanted: dict[bytes, set[int]]) -> list[int]:
    """Ids in [start, end) of jobs parked with a wanted body and delay."""
    found = []
    for chunk in range(start, end, PEEK_CHUNK):
        ids = range(chunk, min(chunk + PEEK_CHUNK, end))
        matches = [(job_id, body) for job_id, body in peek_many(conn, ids).items()
                   if body in wanted]
        if not matches:
            continue
        replies = exchange(conn, [b"stats-job %d\r\n" % job_id for job_id, _ in matches])
        for (job_id, body), reply in zip(matches, replies, strict=True):
            state = _job_state(reply)
            if state is not None and state[0] == "delayed" and state[1] in wanted[body]:
                found.append(job_id)
    return found


def _job_state(reply: Reply) -> tuple[str, int] | None:
    """(state, delay) from a stats-job reply; None if the job is gone."""
    status, _, stats = reply
    if status != b"OK" or stats is None:
        return None
    fields = dict(line.split(": ", 1) for line in stats.decode().splitlines()
                  if ": " in line)
    return fields.get("state", ""), int(fields.get("delay", "0"))


def _by_server(claims: Sequence[Claim]) -> dict[str, list[tuple[int, Claim]]]:
    """server -> (queueID, claim) of the confirmed claims."""
    groups: dict[str, list[tuple[int, Claim]]] = defaultdict(list)
    for claim in claims:
        if claim.server is not None and claim.queue_id is not None:
            groups[claim.server].append((claim.queue_id, claim))
    return groups


def _by_batch(claims: Sequence[Claim]) -> dict[str, list[Claim]]:
    groups: dict[str, list[Claim]] = defaultdict(list)
    for claim in claims:
        groups[claim.batch_id].append(claim)
    return groups

