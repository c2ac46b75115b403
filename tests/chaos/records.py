"""Chaos for the records: consumers and recording producers on one store under load, the
store out of disk, poison events (PostgreSQL restarted: tests/chaos/producer.py). Every
record must end as its events say.

Here the consumers (real `bystroq consume` processes) take the events, so a scenario judges
by the records: a record is wrong when it is missing or not `completed` although its job
completed (every job here completes).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import greenstalk
import msgspec

from bystroq.producer import Producer
from bystroq.records import open_store
from bystroq.testing import config_for, config_text
from tests.chaos.core import Report, Run, chaos_run, fill, jobs_in, small_disk
from tests.conftest import POSTGRES_URL


def _consumer(run: Run, records: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bystroq", "--log-level", "warning", "--config",
         str(run.config_file), "consume", "--records", records],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    run.stack.callback(_end, proc)
    return proc


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wrong(records: str, ids: Sequence[str]) -> list[str]:
    """Ids whose record is missing or not completed."""
    with open_store(records, read_only=True) as store:
        return [i for i in ids if (r := store.get(i)) is None or r.state != "completed"]


def _settle(records: str, ids: Sequence[str], timeout_s: float) -> list[str]:
    """Wait (polling) until every record is completed; the wrong ones at the end."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            wrong = _wrong(records, ids)
        except Exception:  # the store may be away for a moment
            wrong = list(ids)
        if not wrong or time.monotonic() > deadline:
            return wrong
        time.sleep(0.2)


def _produce(run: Run, records: str, ids: Sequence[str], threads: int,
             errors: list[str], pause_s: float = 0.0) -> list[threading.Thread]:
    """`threads` recording producers (one store each) submitting `ids` between them."""
    def produce(share: Sequence[str]) -> None:
        with open_store(records) as store, Producer(run.config, recorder=store) as producer:
            for submission_id in share:
                try:
                    producer.submit("echo", {"submissionID": submission_id})
                except Exception as exc:
                    errors.append(f"{submission_id}: {exc!r}")
                if pause_s:
                    time.sleep(pause_s)

    workers = [threading.Thread(target=produce, args=(ids[n::threads],))
               for n in range(threads)]
    for thread in workers:
        thread.start()
    return workers


def _report(name: str, ids: Sequence[str], wrong: Sequence[str], started: float,
            errors: Sequence[str], consumers: Sequence[subprocess.Popen[bytes]]) -> Report:
    report = Report(scenario=name, submitted=len(ids), completed=len(ids) - len(wrong),
                    wrong_records=len(wrong), wall_s=round(time.monotonic() - started, 1))
    alive = sum(proc.poll() is None for proc in consumers)
    report.notes.append(f"submit errors={len(errors)}, consumers alive={alive}/"
                        f"{len(consumers)}")
    if errors or alive < len(consumers):
        report.lost = max(report.lost, len(errors), 1)
    if wrong:
        report.notes.append(f"e.g. {', '.join(wrong[:3])}")
    return report


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """A database of its own on the local PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"bystroq_chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def two_consumers_postgres(jobs: int = 2000) -> Report:
    """Two `bystroq consume` processes and 8 recording producer threads on one PostgreSQL
    store while two workers run the jobs."""
    with chaos_run(1) as run, _database() as records:
        started = time.monotonic()
        open_store(records).close()
        consumers = [_consumer(run, records) for _ in range(2)]
        run.worker("--concurrency", "2")
        run.worker("--concurrency", "2")
        ids = [f"p{n}" for n in range(jobs)]
        errors: list[str] = []
        for thread in _produce(run, records, ids, 8, errors):
            thread.join()
        wrong = _settle(records, ids, 90)
        return _report("2 consumers + 8 recording producers on PostgreSQL", ids, wrong,
                       started, errors, consumers)


def _done(records: str, ids: Sequence[str]) -> list[str]:
    try:
        wrong = set(_wrong(records, ids))
    except Exception:
        return []
    return [i for i in ids if i not in wrong]


def _wait(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)



def sqlite_disk_full(jobs: int = 400) -> Report:
    """The SQLite store's file system fills up mid-run, then has room again: the consumer
    keeps the events on the server meanwhile and applies them all afterwards."""
    with small_disk() as disk:
        if disk is None:
            report = Report(scenario="SQLite store on a full file system", submitted=0)
            report.notes.append("skipped: cannot mount a tmpfs here")
            return report
        with chaos_run(1) as run:
            started = time.monotonic()
            records = f"sqlite:///{disk / 'records.db'}"
            open_store(records).close()
            consumers = [_consumer(run, records)]
            run.worker("--concurrency", "2")
            ids = [f"d{n}" for n in range(jobs)]
            with Producer(run.config) as producer:
                for submission_id in ids[: jobs // 2]:
                    producer.submit("echo", {"submissionID": submission_id})
                _wait(lambda: len(_done(records, ids)) >= jobs // 4, 60)
                filler = disk / "filler"
                fill(filler)
                for submission_id in ids[jobs // 2:]:
                    producer.submit("echo", {"submissionID": submission_id,
                                             "message": "x" * 2000})
            events = run.config.category("echo").events
            _wait(lambda: jobs_in(run, events) > 0, 30)  # events wait on the server
            waited = jobs_in(run, events)
            filler.unlink()
            wrong = _settle(records, ids, 90)
            report = _report("SQLite store on a full file system", ids, wrong, started, [],
                             consumers)
            report.notes.append(f"events waiting while full={waited}")
            return report




POISON_EVENTS: tuple[dict[str, object], ...] = (
    {"event": "failed", "submissionID": "nul", "reason": "KeyError: 'a\x00b'"},
    {"event": "completed", "submissionID": "big-attempt", "attempt": 2**63},
    {"event": "progress", "submissionID": "big-progress", "data": {"progress": 2**64}},
    {"event": "started", "submissionID": "nul\x00id"},
)


def poison_events(jobs: int = 300) -> Report:
    """Events no store can take as they are, among real ones, on both backends: they are
    buried (or stored escaped) and every real record is right; the consumer lives."""
    with chaos_run(1) as run, _database() as postgres:
        started = time.monotonic()
        sqlite = f"sqlite:///{run.workdir / 'records.db'}"
        events = run.config.category("echo").events
        ids = [f"e{n}" for n in range(jobs)]
        wrong: list[str] = []
        consumers = []
        for records in (sqlite, postgres):
            prefix = f"c{uuid.uuid4().hex[:6]}-"
            config = config_for([s.address for s in run.servers], prefix=prefix)
            run.config, events = config, config.category("echo").events
            run.config_file.write_text(config_text([s.address for s in run.servers],
                                                   prefix=prefix))
            with Producer(config) as producer:
                for n, submission_id in enumerate(ids):
                    producer.submit("echo", {"submissionID": submission_id})
                    if n % 100 == 50:
                        _put(run, events, POISON_EVENTS)
            run.worker("--burst")
            consumers.append(_consumer(run, records))
            wrong += _settle(records, ids, 60)
        report = _report("poison events among 300 (SQLite and PostgreSQL)", ids * 2, wrong,
                         started, [], consumers)
        report.buried = jobs_in(run, events, ['buried'])  # of the last backend's tube
        return report


def _put(run: Run, tube: str, bodies: Sequence[Mapping[str, object]]) -> None:
    server = run.servers[0]
    with greenstalk.Client((server.host, server.port), encoding=None, use=tube) as client:
        for body in bodies:
            client.put(msgspec.json.encode(body))



SCENARIOS: dict[str, Callable[[], Report]] = {
    "two_consumers_postgres": two_consumers_postgres,
    "sqlite_disk_full": sqlite_disk_full,
    "poison_events": poison_events,
}
