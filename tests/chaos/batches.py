"""Chaos for batches: feeders (events consumers) SIGKILLed at random moments while another
feeds the same batch. No item may be lost or run twice, and no parked job may be left.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable

import greenstalk

from bystroq.ops.batches import create_batch
from bystroq.records import open_store
from bystroq.testing import wait_until
from tests.chaos.core import Report, Run, chaos_run

FEEDER = """
import sys
from bystroq.config import load
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records import open_store

with open_store(sys.argv[2]) as store, ConsumeAndFeed(load(sys.argv[1]), store,
                                                      feed_grace_s=1) as consumer:
    consumer.run()
"""


def killed_feeders(items: int = 400, kills: int = 15, seed: int = 1) -> Report:
    """Two servers, two workers, two feeders; one feeder is SIGKILLed `kills` times at
    random moments (each time restarted) while the batch runs."""
    rng = random.Random(seed)
    with chaos_run(2) as run:
        start = time.monotonic()
        url = f"sqlite:///{run.workdir / 'records.db'}"
        path = run.workdir / "items.jsonl"
        path.write_text("".join(json.dumps({"sleep_s": 0.1}) + "\n" for _ in range(items)))
        with open_store(url) as store:
            batch = create_batch(run.config, store, "echo", path, concurrency=8)
            run.worker("--concurrency", "4")
            run.worker("--concurrency", "4")
            feeder = _feeder_starter(run, url)
            feeder()
            victim = feeder()
            done = 0
            while done < kills:
                done += 1
                time.sleep(rng.uniform(0.3, 0.8))  # a random moment (after start-up)
                victim.kill()
                victim.wait()
                victim = feeder()
                current = store.get_batch(batch.batch_id)
                if current is None or current.state != "running":
                    break

            def ended() -> bool:
                current = store.get_batch(batch.batch_id)
                return current is not None and current.state != "running"

            wait_until(ended, timeout_s=120)
            records = store.list(batch=batch.batch_id, limit=items + 1)
            starts = {r.submission_id: sum(1 for e in store.timeline(r.submission_id)
                                           if e.event == "started") for r in records}
            completed = sum(1 for r in records if r.state == "completed")
        parked = _jobs_left(run)
        report = Report(scenario=f"SIGKILL a batch feeder {done} times (2 feeders)",
                        submitted=items, completed=completed, lost=items - completed,
                        ran_twice=sum(1 for n in starts.values() if n > 1),
                        wall_s=round(time.monotonic() - start, 1))
        report.notes.append(f"jobs left on the servers={parked}")
        if parked:
            report.lost = max(report.lost, parked)
        return report


def _feeder_starter(run: Run, url: str) -> Callable[[], subprocess.Popen[bytes]]:
    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", FEEDER, str(run.config_file), url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run.stack.callback(_kill, proc)
        return proc

    return start


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _jobs_left(run: Run) -> int:
    """Jobs still on the submission tube of any server (a parked put left behind)."""
    tube = run.config.category("echo").submission
    left = 0
    for server in run.servers:
        with greenstalk.Client((server.host, server.port), encoding=None) as client:
            try:
                stats = client.stats_tube(tube)
            except greenstalk.NotFoundError:
                continue
            left += sum(int(str(count)) for key, count in stats.items() if key in (
                "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
                "current-jobs-buried"))
    return left


SCENARIOS: dict[str, Callable[[], Report]] = {
    "killed_feeders": killed_feeders,
}
