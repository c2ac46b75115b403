"""Chaos scenarios for the worker's own guarantees: paused workers, a silent network, and
bodies or results the worker must refuse without dying.

A report by a worker that no longer held the job is found from the events alone (see
`non_holder_reports`); every scenario starts its servers, relay and workers and stops them.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import greenstalk
import msgspec

from bystroq.servers import Connection, Server, exchange, put_command
from tests.chaos.core import Report, Run, _stop, chaos_run


def non_holder_reports(events: Iterable[tuple[int, dict[str, Any]]]) -> int:
    """How many jobs have an event put by a worker that no longer held them.

    `events` are (events-tube job id, event) pairs from one server; the job id is the order
    in which the server stored them. An event's `attempt` is the server's `reserves` count
    when its worker took the job, so an event of attempt N+1 of a job (same `queueID`)
    exists only after the server gave the job out again, that is after attempt N's
    reservation ended. Any event of an earlier attempt stored after it was therefore put by
    a worker that no longer held the job. The rule never counts a holder; it can miss a
    stale report that lands in the new holder's reserve-to-started round trip, before the
    later attempt has an event of its own.
    """
    latest: dict[int, int] = {}
    stale: set[int] = set()
    for _, event in sorted(events, key=lambda pair: pair[0]):
        queue_id, attempt = event.get("queueID"), event.get("attempt")
        if not isinstance(queue_id, int) or not isinstance(attempt, int):
            continue
        if attempt < latest.get(queue_id, 0):
            stale.add(queue_id)
        latest[queue_id] = max(attempt, latest.get(queue_id, 0))
    return len(stale)


class Ledger:
    """Every event of the echo category, with the id the server stored it under."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.events: list[tuple[int, dict[str, Any]]] = []

    def collect(self) -> None:
        """Read (and consume) every ready event; count them on the run as core does."""
        run, tube = self.run, self.run.config.category("echo").events
        server = run.servers[0]
        with greenstalk.Client((server.host, server.port), encoding=None, watch=tube) as client:
            while True:
                try:
                    job = client.reserve(0)
                except greenstalk.TimedOutError:
                    return
                event = msgspec.json.decode(job.body)
                self.events.append((job.id, event))
                counter = {"started": run.started, "completed": run.completed,
                           "failed": run.failed}.get(event["event"])
                if counter is not None:
                    counter[event.get("submissionID", f"q{event.get('queueID')}")] += 1
                client.delete(job)

    def wait_for(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            self.collect()
            if done():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def report(self, name: str, ids: Sequence[object], started_at: float) -> Report:
        self.collect()
        report = self.run.report(name, ids, started_at)
        report.two_holders = non_holder_reports(self.events)
        return report

    def taken_over(self) -> int:
        """Jobs another worker reserved again (an event of attempt 2 or later)."""
        return len({e.get("queueID") for _, e in self.events if (e.get("attempt") or 0) > 1})


def _submit_fast(run: Run, count: int, ttr: int, per_second: float | None = None,
                 **fields: object) -> list[object]:
    """`count` echo jobs put in pipelined batches; at `per_second` if given (then the workers
    mostly wait in a reserve with a time-out, as under a steady load), else at once."""
    ids: list[object] = [f"j{i}" for i in range(count)]
    server = run.servers[0]
    tube = run.config.category("echo").submission
    conn = Connection(Server(server.host, server.port), use=tube)
    batch = 500 if per_second is None else max(1, int(per_second / 20))
    started = time.monotonic()
    with conn.lock:
        try:
            for start in range(0, count, batch):
                if per_second is not None:
                    time.sleep(max(0.0, started + start / per_second - time.monotonic()))
                bodies = [msgspec.json.encode({"submissionID": i, **fields})
                          for i in ids[start:start + batch]]
                replies = exchange(conn, [put_command(b, ttr=ttr) for b in bodies])
                assert all(reply[0] == b"INSERTED" for reply in replies)
        finally:
            conn.close()
    return ids


@contextmanager
def feeding(run: Run, count: int, ttr: int, per_second: float) -> Iterator[list[object]]:
    """Submit `count` jobs at `per_second` from a thread while the body runs."""
    ids: list[object] = [f"j{i}" for i in range(count)]
    thread = threading.Thread(target=_submit_fast, args=(run, count, ttr, per_second),
                              name="chaos-feeder")
    thread.start()
    try:
        yield ids
    finally:
        thread.join()


def _all_done(ledger: Ledger, ids: Sequence[object]) -> Callable[[], bool]:
    return lambda: all(ledger.run.completed[i] for i in ids)


def _worker(run: Run, config_file: Path) -> subprocess.Popen[bytes]:
    """A worker like `Run.worker`, with its own config file (e.g. a relay's address)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bystroq", "--log-level", "warning", "--config",
         str(config_file), "listen", "--tube", "echo"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    run.stack.callback(_stop, proc)
    return proc


def _continue_at_exit(run: Run, proc: subprocess.Popen[bytes]) -> None:
    """A stopped worker must be continued before it can be stopped (callbacks run LIFO)."""
    def cont() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)

    run.stack.callback(cont)


def paused_worker(jobs: int = 20_000, ttr: int = 1, per_second: float = 800, seed: int = 7
                  ) -> Report:
    """Two workers on short jobs (TTR 1 s) fed at a steady rate; one is SIGSTOPped for
    1.3-2 s (longer than the TTR) and continued, again and again while jobs arrive: no job
    may be reported by a worker that lost it, and none lost."""
    rng = random.Random(seed)
    with chaos_run(1) as run:
        start = time.monotonic()
        ledger = Ledger(run)
        run.worker()
        victim = run.worker()
        _continue_at_exit(run, victim)
        pauses = 0
        with feeding(run, jobs, ttr, per_second) as ids:
            feeding_s = jobs / per_second
            while time.monotonic() - start < feeding_s:
                ledger.wait_for(lambda: False, rng.uniform(0.05, 0.5))
                victim.send_signal(signal.SIGSTOP)
                pauses += 1
                ledger.wait_for(lambda: False, rng.uniform(ttr + 0.3, ttr + 1.0))
                victim.send_signal(signal.SIGCONT)
        ledger.wait_for(_all_done(ledger, ids), 30)
        report = ledger.report(f"SIGSTOP a worker past the TTR ({ttr} s), {pauses} times",
                               ids, start)
        report.notes.append(f"pauses={pauses}, jobs taken over={ledger.taken_over()}, "
                            f"victim alive={victim.poll() is None}")
        if victim.poll() is not None:
            report.lost = max(report.lost, 1)
        return report


class Relay:
    """A TCP relay the test controls: `partition()` stops forwarding in both directions
    without closing a socket (no RST, no FIN: the bytes wait in the kernels' buffers), as
    a silent network does; `heal()` forwards again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._thread = threading.Thread(target=self._run, name="chaos-relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def partition(self) -> None:
        self._forwarding.clear()

    def heal(self) -> None:
        self._forwarding.set()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._closed.is_set():
                if not self._forwarding.wait(0.05):
                    continue
                for key, _ in selector.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept(selector)
                    elif sock in self._peers:
                        self._forward(selector, sock)
        for sock in list(self._peers):
            sock.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self._listener.accept()
            upstream = socket.create_connection(self.target)
            for sock, peer in ((client, upstream), (upstream, client)):
                sock.setblocking(True)
                self._peers[sock] = peer
                selector.register(sock, selectors.EVENT_READ)

    def _forward(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        for end in (sock, peer):  # one side closed: close the other, as a network would
            selector.unregister(end)
            self._peers.pop(end, None)
            end.close()

    def close(self) -> None:
        self._closed.set()
        self._forwarding.set()
        self._thread.join(timeout=5)
        self._listener.close()


@contextmanager
def relay_to(run: Run) -> Iterator[Relay]:
    server = run.servers[0]
    relay = Relay((server.host, server.port)).start()
    try:
        yield relay
    finally:
        relay.close()


def partitioned_worker(jobs: int = 8_000, ttr: int = 1, per_second: float = 400,
                       seed: int = 11) -> Report:
    """Two workers fed at a steady rate; one reaches the server through a relay that goes
    silent for 2.5 s (longer than the TTR) and then forwards again, over and over: nothing
    lost, and no job reported by a worker that no longer held it."""
    rng = random.Random(seed)
    with chaos_run(1) as run, relay_to(run) as relay:
        start = time.monotonic()
        ledger = Ledger(run)
        relayed = run.workdir / "relayed.yml"
        relayed.write_text(run.config_file.read_text().replace(run.servers[0].address,
                                                               relay.address))
        run.worker()
        victim = _worker(run, relayed)
        partitions = 0
        with feeding(run, jobs, ttr, per_second) as ids:
            while time.monotonic() - start < jobs / per_second:
                ledger.wait_for(lambda: False, rng.uniform(0.2, 0.8))
                relay.partition()
                partitions += 1
                ledger.wait_for(lambda: False, ttr + 1.5)
                relay.heal()
        ledger.wait_for(_all_done(ledger, ids), 40)
        report = ledger.report(f"network to one worker silent past the TTR, {partitions} "
                               f"times", ids, start)
        report.notes.append(f"partitions={partitions}, jobs taken over={ledger.taken_over()}, "
                            f"victim alive={victim.poll() is None}")
        if victim.poll() is not None:
            report.lost = max(report.lost, 1)
        return report


def refused_bodies(others: int = 100) -> Report:
    """A 2 KB body nested 1,000 deep and a job whose result is over max-job-size, among
    ordinary jobs: both end as a failed event that says why and a buried job; one worker
    runs everything and never dies."""
    with chaos_run(1) as run:
        start = time.monotonic()
        ledger = Ledger(run)
        limit = run.servers[0].max_job_size
        server = run.servers[0]
        with greenstalk.Client((server.host, server.port), encoding=None,
                               use=run.config.category("echo").submission) as client:
            deep = client.put(b'{"submissionID": "deep", "x": ' + b"[" * 1000 + b"]" * 1000
                              + b"}")
            client.put(b'{"submissionID": "big", "message": "%s"}' % (b"x" * (limit - 64)))
        ids = _submit_fast(run, others, ttr=60)
        worker = run.worker()
        reasons: dict[str, str] = {}

        def refused() -> bool:
            for _, event in ledger.events:
                if event["event"] == "failed":
                    key = str(event.get("submissionID", f"q{event.get('queueID')}"))
                    reasons[key] = str(event.get("reason"))
            return {f"q{deep}", "big"} <= set(reasons)

        ledger.wait_for(lambda: refused() and _all_done(ledger, ids)(), 60)
        report = ledger.report("a body nested 1,000 deep and a result over max-job-size",
                               ids, start)
        deep_ok = "nested too deeply" in reasons.get(f"q{deep}", "")
        big_ok = "max-job-size" in reasons.get("big", "")
        alive = worker.poll() is None
        report.notes.append(f"deep reason ok={deep_ok}, big reason ok={big_ok}, "
                            f"worker alive={alive}")
        if not (deep_ok and big_ok and alive and report.buried == 2):
            report.lost = max(report.lost, 1)
        return report


SCENARIOS: dict[str, Callable[[], Report]] = {
    "paused_worker": paused_worker,
    "partitioned_worker": partitioned_worker,
    "refused_bodies": refused_bodies,
}
