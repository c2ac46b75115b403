"""The HTTP API's speed, as users run it: `bystroq serve` (uvicorn, records in SQLite by
default) on a free port, with its own beanstalkd. Run by scripts/bench.

1. Submits: `--clients` concurrent clients (16) each POST one job after another to
   `/v1/submissions/echo` over a keep-alive connection; submits/s and latency p50/p99, with
   and without an `Idempotency-Key`. The load generator is a small raw HTTP/1.1 client in
   this process (asyncio streams): it shares the cores with the server, so the CPU seconds
   of both are reported.
2. Live events: a worker (`bystroq listen`) and a consumer (`bystroq consume`) run; jobs
   that report progress are submitted at a steady rate while a client follows
   `GET /v1/events`; the lag of each event is the time it reached the client minus its `at`
   (stamped by the worker when it made the event, same clock): p50/p99/max.

Every figure is the median over --runs runs (a fresh server and tubes each run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bystroq.testing import Beanstalkd, config_text, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"submits_per_s": 2_000.0, "p99_ms": 20.0, "lag_p99_ms": 100.0}


# -- a raw HTTP/1.1 client: cheap enough that the server, not the client, is measured ----


class Http:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Http:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Sequence[str] = ()) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}",
                f"Content-Length: {len(body)}", *headers]
        if body:
            head.append("Content-Type: application/json")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status, fields = await self.head()
        return status, await self.reader.readexactly(int(fields.get("content-length", "0")))

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), fields

    def close(self) -> None:
        self.writer.close()


# -- the processes ---------------------------------------------------------------------------


def bystroq(config: Path, *args: str) -> subprocess.Popen[bytes]:
    log = open(config.with_suffix(f".{args[0]}.log"), "wb")  # noqa: SIM115 (kept by the child)
    return subprocess.Popen([sys.executable, "-m", "bystroq", "--config", str(config), *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.contextmanager
def served(server: Beanstalkd, tmp: Path, records: str | None) -> Iterator[
        tuple[Path, int, subprocess.Popen[bytes]]]:
    """`bystroq serve` on a free port over fresh tubes; (config, port, process)."""
    prefix = f"w{uuid.uuid4().hex[:6]}-"
    config = tmp / f"{prefix}config.yml"
    config.write_text(config_text([server.address], categories=("echo",), prefix=prefix,
                                  records=records or f"sqlite:///{tmp / (prefix + 'db')}"))
    port = free_port()
    proc = bystroq(config, "serve", "--port", str(port))
    try:
        wait_until(lambda: _answers(port) or proc.poll() is not None, timeout_s=30)
        if proc.poll() is not None:
            raise RuntimeError(f"bystroq serve exited {proc.returncode}: "
                               f"{config.with_suffix('.serve.log').read_text()[-800:]}")
        yield config, port, proc
    finally:
        stop(proc)


def _answers(port: int) -> bool:
    async def get() -> int:
        http = await Http.open("127.0.0.1", port)
        try:
            return (await http.request("GET", "/readyz"))[0]
        finally:
            http.close()

    try:
        return asyncio.run(get()) == 200
    except OSError:
        return False


# -- 1. submits --------------------------------------------------------------------------------


async def submit_load(port: int, clients: int, total: int, tag: str,
                      idempotent: bool) -> dict[str, Any]:
    """`total` submits by `clients` concurrent connections; rate, latencies, errors."""
    conns = [await Http.open("127.0.0.1", port) for _ in range(clients)]
    numbers = itertools.count()
    latencies: list[float] = []
    failures: dict[int, int] = {}

    async def client(http: Http) -> None:
        while (i := next(numbers)) < total:
            body = b'{"submissionID":"%s-%d","message":"hello"}' % (tag.encode(), i)
            headers = [f"Idempotency-Key: {tag}-{i}"] if idempotent else []
            start = time.perf_counter()
            status, _ = await http.request("POST", "/v1/submissions/echo", body, headers)
            latencies.append(time.perf_counter() - start)
            if status != 202:
                failures[status] = failures.get(status, 0) + 1

    try:
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(http) for http in conns))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        for http in conns:
            http.close()
    latencies.sort()
    return {"submits_per_s": total / elapsed, "seconds": elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "max_ms": 1000 * latencies[-1], "client_cpu_s": cpu, "errors": failures}


def submits(server: Beanstalkd, tmp: Path, clients: int, total: int,
            idempotent: bool) -> dict[str, Any]:
    with served(server, tmp, None) as (_, port, proc):
        asyncio.run(submit_load(port, clients, min(500, total), "warm", idempotent))
        before = cpu_s(proc.pid)
        result = asyncio.run(submit_load(port, clients, total, "run", idempotent))
        result["server_cpu_s"] = cpu_s(proc.pid) - before
        result["server_cpu_ms_each"] = 1000 * result["server_cpu_s"] / total
    return result


# -- 2. live events ----------------------------------------------------------------------------


async def follow_events(port: int, jobs: int, rate: float, progress: int,
                        limit_s: float) -> dict[str, Any]:
    """Follow /v1/events while submitting `jobs` at `rate`; every event's lag."""
    stream = await Http.open("127.0.0.1", port)
    stream.writer.write(f"GET /v1/events?category=echo HTTP/1.1\r\nHost: {stream.host}\r\n"
                        "Accept: text/event-stream\r\n\r\n".encode())
    status, _ = await stream.head()
    if status != 200:
        raise RuntimeError(f"GET /v1/events answered {status}")
    lags: list[float] = []
    completed = 0
    ready = asyncio.Event()

    async def read() -> None:
        nonlocal completed
        buffer = b""
        while completed < jobs:
            chunk = await stream.reader.read(65536)
            if not chunk:
                raise RuntimeError("the event stream ended")
            now = time.time()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b": bystroq"):
                    ready.set()
                elif line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if isinstance(event.get("at"), float | int):
                        lags.append(now - event["at"])
                    completed += event.get("event") == "completed"

    async def submit() -> None:
        await ready.wait()
        http = await Http.open("127.0.0.1", port)
        start = time.monotonic()
        try:
            for i in range(jobs):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                body = json.dumps({"submissionID": f"sse-{i}", "progress": progress,
                                   "sleep_s": 0.01}).encode()
                status, text = await http.request("POST", "/v1/submissions/echo", body)
                if status != 202:
                    raise RuntimeError(f"submit answered {status}: {text[:200]!r}")
        finally:
            http.close()

    reader = asyncio.ensure_future(read())
    try:
        await asyncio.wait_for(asyncio.gather(reader, submit()), limit_s)
    finally:
        reader.cancel()
        stream.close()
    lags.sort()
    return {"events": len(lags), "lag_p50_ms": 1000 * lags[len(lags) // 2],
            "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)], "lag_max_ms": 1000 * lags[-1]}


def events(server: Beanstalkd, tmp: Path, jobs: int, rate: float) -> dict[str, Any]:
    with served(server, tmp, None) as (config, port, _):
        worker = bystroq(config, "listen", "--tube", "echo")
        consumer = bystroq(config, "consume")
        try:
            return asyncio.run(follow_events(port, jobs, rate, progress=3,
                                             limit_s=60 + 2 * jobs / rate))
        finally:
            stop(worker)
            stop(consumer)


# -- the report ------------------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, float | int)]
    out: dict[str, Any] = {k: statistics.median(float(r[k]) for r in runs) for k in keys}
    out["errors"] = [r.get("errors") for r in runs if r.get("errors")]
    return out


def report(rows: dict[str, dict[str, Any]], lag: dict[str, Any] | None, clients: int,
           runs: int) -> str:
    lines = [f"### HTTP API (`bystroq serve`, records in SQLite), {clients} concurrent "
             f"clients, median of {runs}", "",
             "| submit | submits/s | p50 ms | p99 ms | max ms | server CPU s | "
             "server CPU ms a submit | load generator CPU s | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['submits_per_s']:,.0f} | {m['p50_ms']:.1f} | "
                     f"{m['p99_ms']:.1f} | {m['max_ms']:.1f} | {m['server_cpu_s']:.1f} | "
                     f"{m['server_cpu_ms_each']:.2f} | {m['client_cpu_s']:.1f} | "
                     f"{m['errors'] or 'none'} |")
    if lag is not None:
        lines += ["", "| live events (`GET /v1/events`) | events | lag p50 ms | lag p99 ms | "
                  "lag max ms |", "|---|---:|---:|---:|---:|",
                  f"| worker `at` to client | {lag['events']:,.0f} | {lag['lag_p50_ms']:.1f} | "
                  f"{lag['lag_p99_ms']:.1f} | {lag['lag_max_ms']:.1f} |"]
    plain = rows.get("plain")
    goals = []
    if plain is not None:
        goals += [("submits/s, plain", plain["submits_per_s"], ">=", TARGETS["submits_per_s"]),
                  ("submit p99 ms, plain", plain["p99_ms"], "<=", TARGETS["p99_ms"])]
    if lag is not None:
        goals.append(("event lag p99 ms", lag["lag_p99_ms"], "<=", TARGETS["lag_p99_ms"]))
    lines += ["", "| target | goal | measured | |", "|---|---:|---:|---|"]
    for what, figure, sign, goal in goals:
        met = figure >= goal if sign == ">=" else figure <= goal
        lines.append(f"| {what} | {sign} {goal:,g} | {figure:,.1f} | "
                     f"{'met' if met else '**missed**'} |")
    return "\n".join(lines)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--submits", type=int, default=10_000, help="submits a run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--event-jobs", type=int, default=200,
                        help="jobs submitted while the events are followed")
    parser.add_argument("--event-rate", type=float, default=20.0, help="jobs/s")
    parser.add_argument("--only", choices=("submits", "events"))
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)  # stop what was started, as on Ctrl-C
    if args.quick:
        args.submits, args.runs, args.event_jobs = 1_000, 1, 20
    modes = {"plain": False, "with Idempotency-Key": True}
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    lags: list[dict[str, Any]] = []
    server = Beanstalkd().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bystroq-bench-web-") as tmp:
            for run in range(args.runs):
                if args.only != "events":
                    for name, idempotent in modes.items():
                        result = submits(server, Path(tmp), args.clients, args.submits,
                                         idempotent)
                        found[name].append(result)
                        print(f"run {run + 1}/{args.runs}: {name}: "
                              f"{result['submits_per_s']:,.0f}/s, p99 "
                              f"{result['p99_ms']:.1f} ms", file=sys.stderr, flush=True)
                if args.only != "submits":
                    lag = events(server, Path(tmp), args.event_jobs, args.event_rate)
                    lags.append(lag)
                    print(f"run {run + 1}/{args.runs}: event lag p99 "
                          f"{lag['lag_p99_ms']:.1f} ms", file=sys.stderr, flush=True)
    finally:
        server.kill()
    rows = {name: median_of(runs) for name, runs in found.items() if runs}
    lag_median = median_of(lags) if lags else None
    print(report(rows, lag_median, args.clients, args.runs))
    if args.json:
        args.json.write_text(json.dumps({"submits": rows, "events": lag_median,
                                         "runs": {"submits": found, "events": lags}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
