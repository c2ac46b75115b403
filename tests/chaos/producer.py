"""Chaos on the producer's side: a put cut off in flight, the records database going away.

Helpers (a TCP relay that can hold a connection's bytes, a private PostgreSQL cluster that
can be stopped and started) are used by tests/test_producer_guarantees.py as well.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import greenstalk

from bystroq.errors import SubmitOutcomeUnknown
from bystroq.producer import Producer
from bystroq.records import Store, open_store
from bystroq.testing import Beanstalkd, config_for, config_text, free_port, wait_until
from tests.chaos.core import Report, Run, chaos_run, jobs_in

# -- a relay that stops forwarding without closing anything ------------------------------


class Link:
    """One relayed connection; `pause` holds its bytes (both ways) until `resume`."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (client, upstream)
        self.flowing = threading.Event()
        self.flowing.set()
        self.threads = [threading.Thread(target=self._pump, args=pair, daemon=True)
                        for pair in ((client, upstream), (upstream, client))]
        for thread in self.threads:
            thread.start()

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""  # a reset: what was read before still goes on
                self.flowing.wait()
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)

    def close(self) -> None:
        self.flowing.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


class Relay:
    """Forwards a free loopback port to `target`; each accepted connection is a Link."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.links: list[Link] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()  # the target is down: so is the relayed address
                continue
            self.links.append(Link(client, upstream))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(timeout=5)
        for link in self.links:
            link.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a private PostgreSQL cluster ---------------------------------------------------------


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port (trust auth, run as `postgres`), so a
    test can stop and start its database without touching anyone else's."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if os.geteuid() != 0 or not bins:
            raise RuntimeError("a private PostgreSQL cluster needs root and the postgresql "
                               "server package (/usr/lib/postgresql/*/bin)")
        self.bin = Path(bins[-1])
        self.user = pwd.getpwnam("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="bystroq-pg-"))
        os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], check=True, cwd=self.root,
                       user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.root)})

    def start(self) -> PrivatePostgres:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()


# -- scenarios ---------------------------------------------------------------------------


def _readdress(run: Run, addresses: Sequence[str]) -> None:
    """Point the run's config (and config file) at `addresses` (e.g. through a relay)."""
    run.config = config_for(addresses, prefix=run.prefix)
    run.config_file.write_text(config_text(addresses, prefix=run.prefix))


def _total_puts(servers: Sequence[Beanstalkd], tube: str) -> int:
    total = 0
    for server in servers:
        with (
            greenstalk.Client((server.host, server.port), encoding=None) as client,
            contextlib.suppress(greenstalk.NotFoundError),
        ):
            total += int(client.stats_tube(tube)["total-jobs"])
    return total


def _settle(store: Store, run: Run, ids: Sequence[str], timeout_s: float,
            consumer_errors: list[str]) -> None:
    """Consume events into `store` until every record is final or `timeout_s` passes. A
    consumer whose store fails is closed (its reserved events go back) and made again on
    the same store, as a supervisor would restart it."""
    from bystroq.consumer import Consumer
    from bystroq.records import FINAL_STATES

    deadline = time.monotonic() + timeout_s
    consumer = Consumer(run.config, store)
    try:
        while time.monotonic() < deadline:
            try:
                consumer.step()
                records = [store.get(i) for i in ids]
            except Exception as exc:
                consumer_errors.append(type(exc).__name__)
                consumer.close()
                consumer = Consumer(run.config, store)
                time.sleep(0.2)
                continue
            if all(r is not None and r.state in FINAL_STATES for r in records):
                return
            time.sleep(0.05)
    finally:
        consumer.close()


def _judge(name: str, url: str, ids: Sequence[str], started: float,
           put_after: Sequence[str] = ()) -> Report:
    """Submitted, completed, lost, run more than once and wrong records, read through a
    store of its own; `put_after`: ids whose records the producer itself must have written
    (only the producer records a job's body)."""
    report = Report(scenario=name, submitted=len(ids))
    with open_store(url) as store:
        for submission_id in ids:
            record = store.get(submission_id)
            runs = [e for e in store.timeline(submission_id)
                    if e.event == "started" and e.applied]
            report.ran_twice += len(runs) > 1
            if record is None or record.state != "completed":
                report.lost += 1
                report.wrong_records += record is not None
            else:
                report.completed += 1
        missed = sum(1 for i in put_after if (r := store.get(i)) is None or r.body is None)
    if put_after:
        report.notes.append(f"producer records missed after the restart={missed}")
        report.wrong_records += missed
    report.wall_s = round(time.monotonic() - started, 1)
    return report


def unknown_put(jobs: int = 20, wait_s: float = 0.5) -> Report:
    """Two servers, the first behind a relay. Once the producer is connected, the relay
    holds its bytes past `wait_s`, then lets them through: the caller is told the outcome
    is unknown, the job is not put on the other server, it runs once and its record
    (`unknown` meanwhile) ends completed."""
    with chaos_run(2) as run:
        start = time.monotonic()
        relay = run.stack.enter_context(Relay((run.servers[0].host, run.servers[0].port)))
        _readdress(run, [relay.address, run.servers[1].address])
        url = f"sqlite:///{run.workdir / 'records.db'}"
        store = run.stack.enter_context(open_store(url))
        tube = run.config.category("echo").submission
        ids = [f"u{i}" for i in range(jobs)]
        victim, outcomes = ids[2], []
        with Producer(run.config, wait_s=wait_s, recorder=store) as producer:
            for submission_id in ids[:2]:  # one on each server: the relay's link is open
                last = producer.submit("echo", {"submissionID": submission_id}).server
            warm = 0  # the round robin starts at a random server: the next must be the relay's
            while last.name == relay.address:
                last = producer.submit("echo", {"submissionID": f"warm{warm}"}).server
                warm += 1
            link = relay.links[0]
            link.pause()
            try:
                producer.submit("echo", {"submissionID": victim})  # to the relayed server
                outcomes.append("answered")
            except SubmitOutcomeUnknown:
                outcomes.append("unknown")
            except Exception as exc:
                outcomes.append(type(exc).__name__)
            waiting = store.get(victim)
            on_other = _total_puts(run.servers[1:], tube)
            link.resume()
            for submission_id in ids[3:]:
                producer.submit("echo", {"submissionID": submission_id})
        run.worker()
        errors: list[str] = []
        _settle(store, run, ids, 30, errors)
        report = _judge("put cut off past wait_s, then healed", url, ids, start)
        puts = _total_puts(run.servers, tube)
        report.notes.append(
            f"caller told {outcomes[0]}, record meanwhile "
            f"{waiting.state if waiting else None}, other server puts {on_other - warm}, "
            f"puts {puts - warm} for {jobs} submissions")  # warm-up puts left out
        if outcomes != ["unknown"] or waiting is None or waiting.state != "unknown":
            report.wrong_records += 1
        if puts != jobs + warm or on_other != 1 + warm:
            report.ran_twice += max(1, puts - jobs - warm)
        return report


def store_restart(jobs: int = 30) -> Report:
    """A producer and a consumer, each with its own PostgreSQL records store, while the
    database stops mid-run and comes back: no submit fails, every job runs once, every
    record ends completed; after the restart the producer writes records again (its store
    reconnects), and those missed during the outage come from the jobs' events."""
    with chaos_run(1) as run, PrivatePostgres() as postgres:
        start = time.monotonic()
        postgres.start()
        producer_store = run.stack.enter_context(open_store(postgres.url))
        consumer_store = run.stack.enter_context(open_store(postgres.url))
        ids = [f"p{i}" for i in range(jobs)]
        third = jobs // 3
        errors: list[str] = []
        consumer_errors: list[str] = []
        consumer = threading.Thread(target=_settle,
                                    args=(consumer_store, run, ids, 25, consumer_errors))
        run.worker()
        consumer.start()
        with Producer(run.config, recorder=producer_store) as producer:
            submit = _submitter(producer, errors)
            for submission_id in ids[:third]:
                submit(submission_id)
            postgres.stop()
            for submission_id in ids[third:2 * third]:
                submit(submission_id)
            with contextlib.suppress(TimeoutError):  # their events pile up meanwhile
                wait_until(lambda: jobs_in(run, run.config.category("echo").submission) == 0,
                           timeout_s=10)
            postgres.start()
            with contextlib.suppress(TimeoutError):  # the store reconnects after a backoff
                wait_until(functools.partial(_answers, producer_store), timeout_s=15)
            for submission_id in ids[2 * third:]:
                submit(submission_id)
        consumer.join()
        report = _judge("records PostgreSQL stops and returns", postgres.url, ids, start,
                        put_after=ids[2 * third:])
        report.notes.append(f"submit errors={len(errors)}, consumer store errors="
                            f"{len(consumer_errors)}")
        report.lost = max(report.lost, len(errors))
        return report


def _answers(store: Store) -> bool:
    """Whether the store can be read (a store that is down raises)."""
    try:
        store.count_by_state()
    except Exception:
        return False
    return True


def _submitter(producer: Producer, errors: list[str]) -> Callable[[str], None]:
    def submit(submission_id: str) -> None:
        try:
            producer.submit("echo", {"submissionID": submission_id})
        except Exception as exc:
            errors.append(repr(exc))

    return submit


SCENARIOS: dict[str, Callable[[], Report]] = {
    "unknown_put": unknown_put,
    "store_restart": store_restart,
}
