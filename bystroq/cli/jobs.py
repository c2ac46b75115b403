"""Commands that run jobs and events: listen (a worker), submit, consume."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from bystroq.cli import render
from bystroq.cli.context import BystroqCommand, State, json_option, pass_state, records_option
from bystroq.cli.metrics import exported, metrics_options
from bystroq.config import DEFAULT_PRIORITY
from bystroq.listener import unknown_exception_names
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.ops.submit import (
    check_job,
    job_decoder,
    jobs_file,
    submit_jobs,
    unknown_fields,
)
from bystroq.records.views import ConsumedView, SubmittedView

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bystroq.consumer import ConsumerObserver


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True, help="Category (or its submission tube) to work on.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Jobs at once in this process.")
@click.option("--isolation", type=click.Choice(["inline", "process"]),
              help="Run handlers in this process, or in a reused child process.")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after this many jobs.")
@click.option("--drain-timeout", type=float, default=30.0, show_default=True,
              help="Seconds running jobs get to finish after SIGTERM/SIGINT.")
@metrics_options
@click.option("--heartbeat-interval", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, help="Seconds between the worker's heartbeats (see "
              "`bystroq workers`); silent for three, it is shown as gone.")
@pass_state
def listen(state: State, tube: str, concurrency: int | None, isolation: str | None,
           burst: bool, max_jobs: int | None, drain_timeout: float, metrics_port: int | None,
           metrics_host: str, heartbeat_interval: float) -> None:
    """Run a worker for one category."""
    from bystroq.worker import Worker, WorkerOptions

    config = state.config()
    with state.app(), exported(metrics_host, metrics_port) as registry:
        category = config.resolve(tube)
        observer = None
        if registry is not None:
            from bystroq.metrics.worker import WorkerCollector

            observer = WorkerCollector(registry).observer(
                category.name, concurrency or category.settings.concurrency)
        options = WorkerOptions(concurrency=concurrency, isolation=isolation, burst=burst,
                                max_jobs=max_jobs, drain_timeout_s=drain_timeout,
                                observer=observer, heartbeat_interval_s=heartbeat_interval)
        retry = category.settings.retry
        unknown = unknown_exception_names(retry.on, category.listener) if retry else []
        if unknown:
            render.warning(f"{category.name}: retry `on` names {', '.join(unknown)}, which "
                           f"no exception class of {category.listener} or the builtins has: "
                           "such a failure is never retried; check the spelling")
        with Worker(config, tube, options=options) as worker:
            code = worker.run()
    sys.exit(code)


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True, help="Category (or its submission tube).")
@click.option("--json", "json_text", help="One job as a JSON object.")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Jobs as JSON lines, one job a line.")
@click.option("--priority", type=click.IntRange(0, 2**32 - 1), default=DEFAULT_PRIORITY,
              show_default=True)
@click.option("--delay", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--ttr", type=click.IntRange(min=1), help="Seconds a reservation lasts.")
@records_option
@click.option("--no-records", is_flag=True, help="Do not write queued records.")
@click.option("--unique/--not-unique", default=None,
              help="Refuse jobs whose submission is still queued or running (default: the "
                   "category's `unique:`).")
@click.option("--skip", type=click.IntRange(min=0), default=0,
              help="With --file: check every line, then put only the jobs after the first "
                   "N (to resume an interrupted submit).")
@pass_state
def submit(state: State, tube: str, json_text: str | None, file: Path | None, priority: int,
           delay: int, ttr: int | None, records_url: str | None, no_records: bool,
           unique: bool | None, skip: int) -> None:
    """Submit jobs: one with --json, or a JSON-lines --file (checked whole before any put).
    Prints each job's place as a JSON line (queueID, server, tube, submissionID)."""
    if (json_text is None) == (file is None):
        raise click.UsageError("give exactly one of --json or --file")
    config = state.config()
    with state.app():
        decoder, why = job_decoder(config, tube)
    if decoder is None:
        render.warning(f"jobs checked as JSON objects only: {why}")
    sources = [("--json", json_text.encode())] if json_text is not None else (
        jobs_file(file) if file is not None else [])
    jobs = [check_job(decoder, body, where) for where, body in sources]
    ignored: dict[str, str] = {}  # unknown field -> where first seen
    for job in jobs:
        for key in unknown_fields(decoder, job.body):
            ignored.setdefault(key, job.where)
    for key, where in ignored.items():
        render.warning(f"{where}: field `{key}` is not a field of the job type and is "
                       "ignored; fix its name, or set `strict: true` on the category to "
                       "refuse such jobs")
    if skip >= len(jobs) and jobs:
        raise click.UsageError(f"--skip {skip}: the file has {len(jobs)} jobs")
    interrupted: list[int] = []

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        interrupted.append(signum)  # the slice in flight ends, then the submit stops

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with contextlib.ExitStack() as stack:
            store = None if no_records else stack.enter_context(state.store(records_url))
            for handle, submission_id in submit_jobs(
                    config, tube, jobs, store, priority=priority, delay=delay, ttr=ttr,
                    skip=skip, stop=lambda: bool(interrupted), unique=unique):
                render.echo_json(SubmittedView(
                    submission_id=submission_id, queue_id=handle.job_id,
                    server=handle.server.name, tube=handle.tube))
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command(cls=BystroqCommand)
@click.option("--tube", "tubes", multiple=True, help="Categories to consume (default: all).")
@records_option
@click.option("--burst", is_flag=True, help="Stop when no event is ready.")
@json_option
@metrics_options
@pass_state
def consume(state: State, tubes: tuple[str, ...], records_url: str | None, burst: bool,
            as_json: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Apply events from the events tubes to the submission records (and feed batches)."""
    config = state.config()
    with (exported(metrics_host, metrics_port) as registry,
          state.store(records_url) as store,
          ConsumeAndFeed(config, store, tubes or None,
                         observer=_consumer_metrics(registry)) as consumer):
        def on_signal(signum: int, frame: FrameType | None) -> None:
            consumer.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM,
                                                                    signal.SIGINT)}
        try:
            render.echo(f"consuming into {store.url}", err=True)
            stats = consumer.run(burst=burst)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if as_json:
        render.echo_json(ConsumedView(applied=stats.applied, malformed=stats.malformed,
                                      rejected=stats.rejected,
                                      store_outages=stats.store_outages,
                                      by_event=stats.by_event))
        return
    render.echo(f"applied {stats.applied} events ({stats.malformed} malformed and "
                f"{stats.rejected} refused by the store, buried)", err=True)


def _consumer_metrics(registry: CollectorRegistry | None) -> ConsumerObserver | None:
    if registry is None:
        return None
    from bystroq.metrics.consumer import ConsumerMetrics

    return ConsumerMetrics(registry)
