"""Benchmark bystroq against a bare greenstalk loop and against Dramatiq, RQ and Celery.

Run through scripts/bench, which installs .venv-bench (bystroq editable, the peers, matplotlib)
and runs this file with it. Two parts:

1. In this process, as before: the submit rate and the worker rate of bystroq against a bare
   greenstalk loop doing the same commands (reserve, put, put, delete).
2. Workloads (a) to (d), each system in processes of its own (scripts/bench_peers.py, one run
   a process): (a) no-op jobs: enqueue rate, then processing rate from the first job started
   to the last one ended; (b) jobs with a 2 KB payload that sleep 1 ms; (c) end-to-end latency
   at a fixed offered load; (d) a worker's resident memory after 10,000 and 100,000 jobs.

Every figure is the median of --runs runs. Prints a Markdown report, writes the raw figures as
JSON and a bar chart of processing rates to bench-results/ (bench-results/quick/ with --quick).
No test asserts a speed; this script is where speed is checked.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

import bystroq
import bystroq.log

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import bench_core  # noqa: E402  (sibling scripts, importable once scripts/ is on the path)
import bench_metrics  # noqa: E402
import bench_peers  # noqa: E402

Result = dict[str, float]
BASE = "bystroq-inline-1"
BARE = "bare"


# -- part 1: bystroq's paths against bare loops, interleaved (scripts/bench_core.py) ------


def core_targets(figures: dict[str, bench_core.Figures]) -> list[Target]:
    def ratio(name: str) -> float | None:
        found = figures.get(name)
        return found.ratio if found is not None and found.bare_s else None

    return [
        Target("worker `listen --burst` / bare sequential loop, same round",
               ratio("worker, `listen --burst` (CLI)"), 2.5),
        Target("`submit --file` with records / bare put loop, same round",
               ratio("`submit --file`, records in SQLite (CLI)"), 1),
        Target("`submit --file --no-records` / bare put loop, same round",
               ratio("`submit --file --no-records` (CLI)"), 3),
        Target("Producer.submit_many / bare put loop, same round",
               ratio("Producer.submit_many, in process"), 4),
        Target("`consume --burst` into SQLite / bare reserve+delete loop, same round",
               ratio("`consume --burst` into SQLite (CLI)"), 2.5),
        Target("`consume --burst` into PostgreSQL / bare reserve+delete loop, same round",
               ratio("`consume --burst` into PostgreSQL (CLI)"), 1.5),
        Target("worker with metrics / without, same round", ratio(bench_metrics.NAME), 0.95),
        Target("worker with metrics / without, CPU time, same round",
               ratio(bench_metrics.CPU_NAME), 0.95),
    ]


# -- part 2: the workloads, each run in a process of its own ---------------------------------


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    args: list[str]
    timeout_s: float
    systems: tuple[str, ...]


@dataclass
class Plan:
    runs: int
    workloads: list[Workload]
    stop_grace_s: float
    results: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)


def workloads(quick: bool, jobs: int, systems: Sequence[str], memory_systems: Sequence[str],
              checkpoints: tuple[int, int] | None) -> list[Workload]:
    if quick:
        a_jobs, b_jobs, seconds, points = 300, 60, 1.0, (200, 1000)
    else:
        a_jobs, b_jobs, seconds, points = jobs, 2_000, 10.0, (10_000, 100_000)
    checkpoints = checkpoints or points
    rate = 200
    in_memory = tuple(s for s in systems if s in memory_systems)
    return [
        Workload("a", f"(a) {a_jobs:,} no-op jobs",
                 ["throughput", "--jobs", str(a_jobs)], 900, tuple(systems)),
        Workload("b", f"(b) {b_jobs:,} jobs with a 2 KB payload that sleep 1 ms",
                 ["throughput", "--jobs", str(b_jobs), "--payload-bytes", "2048",
                  "--sleep-ms", "1"], 300, tuple(systems)),
        Workload("c", f"(c) end-to-end latency, {rate} no-op jobs/s offered for {seconds:g} s",
                 ["latency", "--rate", str(rate), "--seconds", str(seconds)], 60, tuple(systems)),
        Workload("d", f"(d) worker resident memory after {checkpoints[0]:,} and "
                      f"{checkpoints[1]:,} no-op jobs",
                 ["memory", "--checkpoints", ",".join(map(str, checkpoints))], 1500, in_memory),
    ]


class Driver:
    """One run of bench_peers.py; stopped with its workers on Ctrl-C, SIGTERM or time-out."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "bench_peers.py"), "run", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            preexec_fn=bench_peers._die_with_parent(signal.SIGTERM),
        )

    def result(self, limit_s: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            self.stop()
            return {"error": f"run did not finish within {limit_s:.0f}s"}
        lines = out.strip().splitlines()
        try:
            return dict(json.loads(lines[-1]))
        except (IndexError, json.JSONDecodeError):
            return {"error": f"run exited {self.proc.returncode}: {err.strip()[-800:]}"}

    def stop(self) -> None:
        """SIGTERM (the run cleans up: workers, beanstalkd, Redis), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def run_plan(plan: Plan, redis_url: str) -> None:
    """Every (run, workload, system), runs interleaved so that noise spreads over systems."""
    total = plan.runs * sum(len(w.systems) for w in plan.workloads)
    done = 0
    for run in range(1, plan.runs + 1):
        for workload in plan.workloads:
            for system in workload.systems:
                done += 1
                started = time.monotonic()
                args = [system, *workload.args, "--redis-url", redis_url,
                        "--timeout", str(workload.timeout_s),
                        "--time-limit", str(int(workload.timeout_s + 120)),
                        "--stop-grace", str(plan.stop_grace_s)]
                driver = Driver(args)
                try:
                    result = driver.result(workload.timeout_s + 180)
                finally:
                    driver.stop()
                plan.results.setdefault(workload.key, {}).setdefault(system, []).append(result)
                _progress(done, total, workload, system, run, plan.runs, result,
                          time.monotonic() - started)


def _progress(done: int, total: int, workload: Workload, system: str, run: int, runs: int,
              result: dict[str, Any], elapsed: float) -> None:
    if "error" in result:
        what = f"ERROR {result['error'].splitlines()[0][:200]}"
        if "logs" in result:
            what += f" (logs: {result['logs']})"
    elif "process_rate" in result:
        what = (f"enqueue {result['enqueue_rate']:,.0f}/s, "
                f"processing {result['process_rate']:,.0f}/s")
    elif "p99_ms" in result:
        what = f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
    else:
        what = f"RSS {result['rss_kib']}"
    print(f"[{done}/{total}] ({workload.key}) {system}, run {run}/{runs}: {what} "
          f"({elapsed:.0f}s)", file=sys.stderr, flush=True)


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over the runs that succeeded."""
    good = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"runs_ok": len(good), "runs": len(runs)}
    if not good:
        out["error"] = runs[-1].get("error", "no run") if runs else "no run"
        return out
    for key in ("enqueue_rate", "process_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                "offered_rate", "missing", "growth_kib"):
        if key in good[0]:
            out[key] = statistics.median(float(r[key]) for r in good)
    if "rss_kib" in good[0]:
        out["rss_kib"] = {k: statistics.median(float(r["rss_kib"][k]) for r in good)
                          for k in good[0]["rss_kib"]}
    return out


# -- the machine, Redis, versions ------------------------------------------------------------


def redis_ping(url: str) -> str | None:
    """None when Redis answers PING at `url`, else why not."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379),
                                      timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return None if answer.startswith(b"+PONG") else f"unexpected answer {answer[:40]!r}"


def redis_version(url: str) -> str:
    parsed = urlparse(url)
    with contextlib.suppress(OSError), socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=2) as sock:
        sock.sendall(b"INFO server\r\n")
        text = sock.recv(65536).decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def beanstalkd_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["beanstalkd", "-v"], capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().removeprefix("beanstalkd ")
    return "unknown"


def versions(redis_url: str, with_peers: bool) -> dict[str, str]:
    found = {"python": platform.python_version(), "beanstalkd": beanstalkd_version()}
    packages = ["bystroq", "greenstalk", "msgspec", "structlog"]
    if with_peers:
        packages += ["dramatiq", "arq", "rq", "celery", "kombu", "billiard", "redis"]
        found["redis-server"] = redis_version(redis_url)
    packages.append("matplotlib")
    for name in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def peers_available(requested: Sequence[str], redis_url: str) -> tuple[list[str], list[str]]:
    """The peers that can run here, and one line for each reason some cannot."""
    wanted = [s for s in requested if s in bench_peers.PEERS]
    if not wanted:
        return [], []
    why = redis_ping(redis_url)
    if why is not None:
        return [], [f"Redis is not reachable at {redis_url} ({why}): skipping "
                    f"{', '.join(wanted)}; the bystroq rows still run."]
    needs = {"dramatiq": "dramatiq", "arq": "arq", "rq": "rq", "celery-solo": "celery",
             "celery-prefork-2": "celery"}
    ok, notes = [], []
    for name in wanted:
        module = needs[name]
        if importlib.util.find_spec(module) is None or importlib.util.find_spec("redis") is None:
            notes.append(f"{module} is not installed in this environment ({sys.executable}): "
                         f"skipping {name} (scripts/bench installs it into .venv-bench).")
        else:
            ok.append(name)
    return ok, notes


# -- the report ------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _runs(results: list[dict[str, Any]], key: str, fmt: str) -> str:
    return ", ".join(fmt.format(r[key]) if "error" not in r else "error" for r in results)


def table_throughput(plan: Plan, key: str) -> list[str]:
    rows = plan.results.get(key, {})
    med = {s: medians(r) for s, r in rows.items()}
    base = med.get(BASE, {})
    lines = ["| system | enqueue jobs/s | x bystroq | processing jobs/s | x bystroq | "
             "processing, each run |", "|---|---:|---:|---:|---:|---|"]
    for system, results in rows.items():
        m = med[system]
        if "error" in m:
            lines.append(f"| {bench_peers.SYSTEMS[system]} | error: {m['error'][:80]} "
                         "| | | | |")
            continue
        lines.append(
            f"| {_label(system)} | {_rate(m['enqueue_rate'])} | "
            f"{_ratio(m['enqueue_rate'], base.get('enqueue_rate'))} | "
            f"{_rate(m['process_rate'])} | {_ratio(m['process_rate'], base.get('process_rate'))}"
            f" | {_runs(results, 'process_rate', '{:,.0f}')} |")
    return lines


def table_latency(plan: Plan) -> list[str]:
    rows = plan.results.get("c", {})
    med = {s: medians(r) for s, r in rows.items()}
    base = med.get(BASE, {})
    lines = ["| system | p50 ms | p95 ms | p99 ms | p99 x bystroq | max ms | offered jobs/s | "
             "p99, each run |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for system, results in rows.items():
        m = med[system]
        if "error" in m:
            lines.append(f"| {_label(system)} | error: {m['error'][:80]} | | | | | | |")
            continue
        missing = f" ({m['missing']:.0f} not seen)" if m.get("missing") else ""
        lines.append(
            f"| {_label(system)} | {m['p50_ms']:.2f} | {m['p95_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{_ratio(m['p99_ms'], base.get('p99_ms'))} | {m['max_ms']:.1f} | "
            f"{m['offered_rate']:.0f}{missing} | {_runs(results, 'p99_ms', '{:.2f}')} |")
    return lines


def table_memory(plan: Plan) -> list[str]:
    rows = plan.results.get("d", {})
    med = {s: medians(r) for s, r in rows.items()}
    points = next((sorted(m["rss_kib"], key=int) for m in med.values() if "rss_kib" in m), [])
    if len(points) < 3:
        return ["every run failed: " + "; ".join(m.get("error", "") for m in med.values())]
    first, last = points[1], points[-1]
    base_last = med.get(BASE, {}).get("rss_kib", {}).get(last)
    lines = [f"| system | RSS MiB after {int(first):,} | after {int(last):,} | growth MiB | "
             "RSS x bystroq | growth MiB, each run |", "|---|---:|---:|---:|---:|---|"]
    for system, results in rows.items():
        m = med[system]
        if "error" in m:
            lines.append(f"| {_label(system)} | error: {m['error'][:80]} | | | | |")
            continue
        each = ", ".join(f"{r['growth_kib'] / 1024:+.1f}" if "error" not in r else "error"
                         for r in results)
        lines.append(
            f"| {_label(system)} | {m['rss_kib'][first] / 1024:.1f} | "
            f"{m['rss_kib'][last] / 1024:.1f} | {m['growth_kib'] / 1024:+.1f} | "
            f"{_ratio(m['rss_kib'][last], base_last)} | {each} |")
    return lines


def _label(system: str) -> str:
    label = bench_peers.SYSTEMS[system]
    return f"**{label}**" if system == BASE else label


@dataclass(frozen=True)
class Target:
    what: str
    figure: float | None
    goal: float
    at_most: bool = False
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        if self.figure is None:
            return None
        return self.figure <= self.goal if self.at_most else self.figure >= self.goal

    def row(self) -> str:
        sign = "<=" if self.at_most else ">="
        figure = "-" if self.figure is None else f"{self.figure:.2f}{self.unit}"
        verdict = {True: "met", False: "**missed**", None: "not measured"}[self.met]
        return f"| {self.what} | {sign} {self.goal:g}{self.unit} | {figure} | {verdict} |"


def targets(plan: Plan) -> list[Target]:
    def med(key: str, system: str, figure: str) -> float | None:
        runs = plan.results.get(key, {}).get(system)
        value = medians(runs).get(figure) if runs else None
        return None if value is None else float(value)

    def over(system: str, key: str = "a", figure: str = "process_rate") -> float | None:
        mine, theirs = med(key, BASE, figure), med(key, system, figure)
        return None if mine is None or not theirs else mine / theirs

    growth = med("d", BASE, "growth_kib")
    return [
        Target("(a) processing rate, bystroq / Dramatiq", over("dramatiq"), 3),
        Target("(a) processing rate, bystroq / arq", over("arq"), 1),
        Target("(a) processing rate, bystroq / Celery solo", over("celery-solo"), 8),
        Target("(a) processing rate, bystroq / RQ SimpleWorker", over("rq"), 15),
        Target("(a) processing rate, bystroq / bare greenstalk loop", over(BARE), 0.7),
        Target("(a) enqueue rate, bystroq / bare greenstalk put loop",
               over(BARE, figure="enqueue_rate"), 0.8),
        Target("(c) latency p99 at 200 jobs/s", med("c", BASE, "p99_ms"), 2, True, " ms"),
        Target("(d) memory growth between the two checkpoints",
               None if growth is None else growth / 1024, 5, True, " MiB"),
    ]


def report(plan: Plan, core_lines: list[str], goals: list[Target], info: dict[str, Any],
           notes: list[str]) -> str:
    v = info["versions"]
    peers = ", ".join(f"{k} {v[k]}" for k in ("dramatiq", "arq", "rq", "celery", "kombu", "redis",
                                                "redis-server") if k in v)
    lines = [f"## bystroq benchmark, {info['date']}", "",
             f"{info['cores']} cores ({info['cpu']}), Linux {platform.release()}; "
             f"Python {v['python']}, bystroq {v.get('bystroq', '?')}, greenstalk "
             f"{v.get('greenstalk', '?')}, msgspec {v.get('msgspec', '?')}, beanstalkd "
             f"{v['beanstalkd']}" + (f"; peers: {peers}" if peers else "") + ". "
             f"Median of {plan.runs} run{'s' if plan.runs > 1 else ''}; "
             f"x columns are ratios to bystroq inline, 1 process.", ""]
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])
    lines += [*core_lines, ""]
    for workload in plan.workloads:
        if workload.key not in plan.results:
            continue
        lines += [f"### {workload.title}", ""]
        if workload.key in ("a", "b"):
            lines += table_throughput(plan, workload.key)
        elif workload.key == "c":
            lines += table_latency(plan)
        else:
            lines += table_memory(plan)
        lines.append("")
    lines += ["### Targets for bystroq inline, 1 process", "",
              "| target | goal | measured | |", "|---|---:|---:|---|"]
    lines += [goal.row() for goal in goals]
    return "\n".join(lines) + "\n"


def chart(plan: Plan, path: Path, info: dict[str, Any]) -> str:
    """A bar chart of processing rates, (a) and (b); the reason when there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed here (scripts/bench installs it)"
    panels = [w for w in plan.workloads if w.key in ("a", "b") and w.key in plan.results]
    if not panels:
        return "no chart: no throughput workload ran"
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
    for ax, workload in zip(axes[0], panels, strict=True):
        rows = [(s, medians(r)) for s, r in plan.results[workload.key].items()]
        rows = [(s, m) for s, m in rows if "process_rate" in m]
        names = [bench_peers.SYSTEMS[s] for s, _ in rows][::-1]
        rates = [m["process_rate"] for _, m in rows][::-1]
        colors = ["#1f77b4" if s.startswith("bystroq") else "#7f7f7f" if s == BARE
                  else "#ff7f0e" for s, _ in rows][::-1]
        bars = ax.barh(names, rates, color=colors)
        base = medians(plan.results[workload.key].get(BASE, [])).get("process_rate")
        for bar, rate in zip(bars, rates, strict=True):
            label = f" {rate:,.0f}" + (f" ({rate / base:.2f}x)" if base else "")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label,
                    va="center", fontsize=8)
        ax.set_title(workload.title, fontsize=10)
        ax.set_xlabel("jobs/s processed (median)")
        ax.set_xlim(0, max(rates, default=1) * 1.3)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"Processing rates, {info['date']}, {info['cores']} cores, "
                 f"median of {plan.runs}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


# -- command line ----------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in (a) and in part 1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test")
    parser.add_argument("--systems", default=",".join(bench_peers.SYSTEMS),
                        help="comma-separated, from: " + ", ".join(bench_peers.SYSTEMS))
    parser.add_argument("--workloads", default="a,b,c,d", help="comma-separated, from a,b,c,d")
    parser.add_argument("--memory-systems", default="bare,bystroq-inline-1,bystroq-process-1",
                        help="systems measured in (d); 100,000 jobs take a peer minutes "
                             "(RQ about 7), so the peers are left out unless named here")
    parser.add_argument("--memory-checkpoints", help="jobs at the two readings of (d), "
                        "e.g. 10000,100000 (the default)")
    parser.add_argument("--no-peers", action="store_true", help="bare loop and bystroq only")
    parser.add_argument("--no-in-process", action="store_true", help="skip part 1")
    parser.add_argument("--submit-jobs", type=int, help="jobs a submit path puts in part 1 "
                        "(default 100,000; 5,000 with --quick)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                        help="the peers' Redis; its database is flushed before and after")
    parser.add_argument("--out", type=Path, help="where JSON and chart go "
                        "(default bench-results/, bench-results/quick/ with --quick)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    bystroq.log.configure(level="warning")

    n, runs = (2_000, 1) if args.quick else (args.jobs, args.runs)
    memory_systems = ("bystroq-inline-1",) if args.quick else args.memory_systems.split(",")
    points = None
    if args.memory_checkpoints:
        first, second = (int(x) for x in args.memory_checkpoints.split(","))
        points = (first, second)
    requested = [s for s in args.systems.split(",") if s]
    unknown = [s for s in requested if s not in bench_peers.SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; expected: {', '.join(bench_peers.SYSTEMS)}")
    peers, notes = ([], []) if args.no_peers else peers_available(requested, args.redis_url)
    systems = [s for s in requested if s not in bench_peers.PEERS or s in peers]
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count(),
        "cpu": _cpu_model(), "quick": args.quick,
        "versions": versions(args.redis_url, bool(peers)),
    }
    plan = Plan(runs=runs, stop_grace_s=0.3 if args.quick else 10.0,
                workloads=[w for w in workloads(args.quick, n, systems, memory_systems, points)
                           if w.key in args.workloads.split(",") and w.systems])

    core: dict[str, bench_core.Figures] = {}
    chosen: list[bench_core.Pair] = []
    try:
        if not args.no_in_process:
            print("part 1: bystroq paths against bare loops, interleaved rounds",
                  file=sys.stderr, flush=True)
            chosen, core = bench_core.run(
                n, args.submit_jobs or (5_000 if args.quick else 100_000),
                max(runs, 1 if args.quick else 5),
                log=lambda line: print(line, file=sys.stderr, flush=True))
        run_plan(plan, args.redis_url)
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        sys.exit(130)

    core_lines = bench_core.report(chosen, core, len(next(iter(core.values())).bare_s)
                                   ) if core else []
    goals = core_targets(core) + targets(plan)
    text = report(plan, core_lines, goals, info, notes)
    print("\n" + text)

    out = args.out or (ROOT / "bench-results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    raw = {
        **info, "jobs": n, "runs": runs,
        "core": {k: {"ratio": v.ratio, "ratios": v.ratios, "bare_s": v.bare_s,
                     "bystroq_s": v.bystroq_s} for k, v in core.items()},
        "workloads": {w.key: {"title": w.title, "args": w.args,
                              "systems": {s: {"median": medians(r), "runs": r}
                                          for s, r in plan.results.get(w.key, {}).items()}}
                      for w in plan.workloads},
        "targets": [{"what": g.what, "goal": g.goal, "at_most": g.at_most,
                     "figure": g.figure, "met": g.met} for g in goals],
        "notes": notes,
    }
    json_path = out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(raw, indent=2, default=str))
    print(f"raw figures: {json_path}", file=sys.stderr)
    print(chart(plan, out / "processing-rates.png", info), file=sys.stderr)
    failed = sum("error" in r for w in plan.results.values() for rs in w.values() for r in rs)
    if failed:
        print(f"{failed} run(s) failed; see the errors above", file=sys.stderr)
        sys.exit(1)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
