"""Events consumer throughput: events/s applied into each records backend, each event
deleted from beanstalkd only after its transaction committed. Run by scripts/bench."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import greenstalk

from bystroq.consumer import Consumer
from bystroq.messages import (
    CompletedJobMessage,
    ProgressData,
    ProgressMessage,
    SubmittedJobMessage,
    encode,
)
from bystroq.records import open_store
from bystroq.testing import Beanstalkd, config_for

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def fill(address: tuple[str, int], tube: str, submissions: int) -> int:
    """started, progress, completed for each submission: what a worker leaves."""
    with greenstalk.Client(address, encoding=None, use=tube) as client:
        for i in range(submissions):
            fields: dict[str, Any] = {"submissionID": f"s{i}", "queueID": i, "attempt": 1,
                                      "worker": "w"}
            client.put(encode(SubmittedJobMessage(**fields, seq=0, at=time.time())))
            client.put(encode(ProgressMessage(**fields, seq=1, at=time.time(),
                                              data=ProgressData(progress=10, skipped=0))))
            client.put(encode(CompletedJobMessage(**fields, seq=2, at=time.time())))
    return submissions * 3


def one_run(server: Beanstalkd, url: str, submissions: int) -> float:
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    config = config_for([server.address], categories=("echo",), prefix=prefix)
    host, port = server.address.split(":")
    total = fill((host, int(port)), config.category("echo").events, submissions)
    with open_store(url) as store, Consumer(config, store) as consumer:
        start = time.perf_counter()
        stats = consumer.run(burst=True)
        elapsed = time.perf_counter() - start
    assert stats.applied == total, (stats.applied, total)
    return total / elapsed


def postgres_url() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as conn:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    except Exception as exc:  # any failure means: no PostgreSQL here
        print(f"PostgreSQL not available ({exc}); skipping it", file=sys.stderr)
        return None


def drop_schema(url: str) -> None:
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    server = Beanstalkd().start()
    try:
        with TemporaryDirectory() as tmp:
            urls = {"sqlite": f"sqlite:///{tmp}/bench.db"}
            pg = postgres_url()
            if pg:
                urls["postgres"] = pg
            try:
                for name, url in urls.items():
                    rates = [one_run(server, url, args.submissions) for _ in range(args.runs)]
                    figures[name] = statistics.median(rates)
            finally:
                if pg:
                    drop_schema(pg)
    finally:
        server.kill()
    print("| records backend | events applied/s (median) | target |")
    print("|---|---:|---:|")
    targets = {"sqlite": 10_000, "postgres": 5_000}
    for name, rate in figures.items():
        print(f"| {name} | {rate:,.0f} | >= {targets[name]:,} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
