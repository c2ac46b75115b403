"""The `bystroq` command: parses arguments, sets up logging, calls the library."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec

from bystroq import config as config_mod
from bystroq import inspect as inspect_mod
from bystroq import log
from bystroq.errors import BystroqError, DecodeError, ListenerError, SubmitIncomplete
from bystroq.messages import JobDecoder, json_value
from bystroq.producer import Producer, Submitted
from bystroq.records.model import STATES


@dataclass
class State:
    config_path: str | None
    json_logs: bool
    log_level: str

    def config(self) -> config_mod.LoadedConfig:
        return config_mod.load(self.config_path)


pass_state = click.make_pass_decorator(State)


class Command(click.Group):
    """Turns BystroqError into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BystroqError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=Command)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file (default: $BYSTROQ_CONFIG, else config/beanstalk.yml, "
                   "else the built-in template at 127.0.0.1:11300).")
@click.option("--json-logs", is_flag=True, help="Log JSON lines instead of key=value.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.version_option(package_name="bystroq")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, json_logs: bool, log_level: str) -> None:
    """bystroq: jobs on Beanstalkd tubes, with events and submission records."""
    ctx.obj = State(config_path, json_logs, log_level)
    log.configure(json=json_logs, level=log_level)


def _records_url(state: State, url: str | None) -> str:
    from bystroq.records import DEFAULT_URL

    return url or state.config().config.records or DEFAULT_URL


records_option = click.option(
    "--records", "records_url", help="Records store URL: sqlite:///path.db or "
    "postgresql://... (default: the config's `records:`, else sqlite:///bystroq.db).")


@main.command()
@click.option("--tube", required=True, help="Category (or its submission tube) to work on.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Jobs at once in this process.")
@click.option("--isolation", type=click.Choice(["inline", "process"]),
              help="Run handlers in this process, or in a reused child process.")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after this many jobs.")
@click.option("--drain-timeout", type=float, default=30.0, show_default=True,
              help="Seconds running jobs get to finish after SIGTERM/SIGINT.")
@pass_state
def listen(state: State, tube: str, concurrency: int | None, isolation: str | None,
           burst: bool, max_jobs: int | None, drain_timeout: float) -> None:
    """Run a worker for one category."""
    from bystroq.worker import Worker, WorkerOptions

    options = WorkerOptions(concurrency=concurrency, isolation=isolation, burst=burst,
                            max_jobs=max_jobs, drain_timeout_s=drain_timeout)
    with Worker(state.config(), tube, options=options) as worker:
        sys.exit(worker.run())


@main.command()
@click.option("--tube", required=True, help="Category (or its submission tube).")
@click.option("--json", "json_text", help="One job as a JSON object.")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Jobs as JSON lines, one job a line.")
@click.option("--priority", type=click.IntRange(0, 2**32 - 1), default=2**16, show_default=True)
@click.option("--delay", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--ttr", type=click.IntRange(min=1), help="Seconds a reservation lasts.")
@records_option
@click.option("--no-records", is_flag=True, help="Do not write queued records.")
@pass_state
def submit(state: State, tube: str, json_text: str | None, file: Path | None, priority: int,
           delay: int, ttr: int | None, records_url: str | None, no_records: bool) -> None:
    """Submit jobs: one with --json, or a JSON-lines --file (checked whole before any put)."""
    if (json_text is None) == (file is None):
        raise click.UsageError("give exactly one of --json or --file")
    config = state.config()
    decoder = _job_decoder(config, tube)
    if json_text is not None:
        bodies = [_checked(decoder, json_text.encode(), "--json")]
    else:
        assert file is not None
        bodies = [_checked(decoder, line, f"{file}:{number}")
                  for number, line in _lines(file)]
    from bystroq.records import open_store

    with contextlib.ExitStack() as stack:
        store = None if no_records else stack.enter_context(
            open_store(_records_url(state, records_url)))
        producer = stack.enter_context(Producer(config, recorder=store))
        if json_text is not None:
            handles = [producer.submit(tube, bodies[0][0], priority=priority, delay=delay,
                                       ttr=ttr)]
        else:
            try:
                handles = producer.submit_many(tube, [body for body, _ in bodies],
                                               priority=priority, delay=delay, ttr=ttr)
            except SubmitIncomplete as exc:
                _echo_handles([h for h in exc.submitted if h is not None])
                raise BystroqError(str(exc)) from None
        _echo_handles(handles)


def _echo_handles(handles: list[Submitted]) -> None:
    click.echo("".join(json.dumps({"queueID": h.job_id, "server": h.server.name,
                                   "tube": h.tube, "submissionID": h.submission_id}) + "\n"
                       for h in handles), nl=False)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield number, line.strip()


def _job_decoder(config: config_mod.LoadedConfig, tube: str) -> JobDecoder[Any] | None:
    """The category's Struct decoder when its listener imports; else None (JSON check only)."""
    from bystroq.worker.listener import load_listener

    try:
        listener = load_listener(config.listener_module(tube))
    except ListenerError as exc:
        click.echo(f"warning: jobs checked as JSON objects only: {exc}", err=True)
        return None
    return JobDecoder(listener.job_data_type)


def _checked(
    decoder: JobDecoder[Any] | None, body: bytes, where: str
) -> tuple[bytes, str | int | None]:
    """The body and its submissionID, once it passed the category's Struct (or is an object)."""
    try:
        if decoder is not None:
            return body, decoder.decode(body).submissionID
        data = json_value(body)
        if not isinstance(data, dict):
            raise DecodeError("expected a JSON object")
        return body, data.get("submissionID")
    except (DecodeError, msgspec.DecodeError) as exc:
        raise BystroqError(f"{where}: {exc}; nothing was submitted") from None


@main.command()
@click.option("--tube", "tubes", multiple=True, help="Tube(s) to show (default: configured).")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def stats(state: State, tubes: tuple[str, ...], as_json: bool) -> None:
    """Jobs per server and tube: ready, reserved, delayed, buried, and workers watching."""
    rows = inspect_mod.tube_stats(state.config(), tubes)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows]))
        return
    header = ("server", "tube", "ready", "reserved", "delayed", "buried", "watching")
    table = [header]
    for row in rows:
        if isinstance(row, inspect_mod.ServerDown):
            table.append((row.server, f"DOWN: {row.error}", "", "", "", "", ""))
        else:
            table.append((row.server, row.tube, str(row.ready), str(row.reserved),
                          str(row.delayed), str(row.buried), str(row.watching)))
    click.echo(format_table(table))


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def _tube_name(config: config_mod.LoadedConfig, tube: str, events: bool = False) -> str:
    """A category name stands for its submission (or events) tube; other names pass."""
    tubes = config.config.beanstalkd.tubes
    if tube in tubes:
        return tubes[tube].events if events else tubes[tube].submission
    return tube


@main.command()
@click.option("--tube", required=True)
@click.option("--state", "job_state", type=click.Choice(["ready", "delayed", "buried"]),
              default="ready", show_default=True)
@pass_state
def peek(state: State, tube: str, job_state: str) -> None:
    """Show the next ready, delayed or buried job of a tube on each server."""
    config = state.config()
    found = inspect_mod.peek(config, _tube_name(config, tube), job_state)
    if not found:
        click.echo(f"no {job_state} job in {tube}")
    for job in found:
        if isinstance(job, inspect_mod.ServerDown):
            click.echo(f"{job.server}: unreachable ({job.error})")
            continue
        click.echo(f"{job.server} job {job.job_id} (reserves {job.reserves}, age {job.age_s}s): "
                   f"{job.body.decode(errors='replace')}")


@main.command()
@click.option("--tube", required=True)
@click.option("--bound", type=click.IntRange(min=1), default=1000, show_default=True)
@pass_state
def kick(state: State, tube: str, bound: int) -> None:
    """Move buried (else delayed) jobs back to ready, on each server."""
    config = state.config()
    _per_server(inspect_mod.kick(config, _tube_name(config, tube), bound), "kicked")


def _per_server(counts: dict[str, int | inspect_mod.ServerDown], done: str) -> None:
    for server, count in counts.items():
        if isinstance(count, inspect_mod.ServerDown):
            click.echo(f"{server}: unreachable ({count.error})")
        else:
            click.echo(f"{server}: {done} {count}")


@main.command()
@click.option("--tube", required=True, help="Category or events tube.")
@click.option("--follow", is_flag=True, help="Keep printing events as they arrive.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_state
def events(state: State, tube: str, follow: bool, as_json: bool) -> None:
    """Print (and consume) events from an events tube, one line each."""
    config = state.config()
    try:
        for server, event in inspect_mod.follow_events(
            config, _tube_name(config, tube, events=True), follow
        ):
            if as_json:
                payload = event if isinstance(event, dict) else {"raw": event.decode("latin-1")}
                click.echo(json.dumps({"server": server.name, **payload}))
            else:
                click.echo(format_event(server.name, event))
    except KeyboardInterrupt:
        pass


def format_event(server: str, event: dict[str, Any] | bytes) -> str:
    if not isinstance(event, dict):
        return f"{server} (not JSON) {event!r}"
    name = event.get("event", "?")
    ident = event.get("submissionID", f"queueID={event.get('queueID')}")
    rest = {k: v for k, v in event.items()
            if k not in ("event", "submissionID", "worker", "at", "seq")}
    extra = " ".join(f"{k}={json.dumps(v)}" for k, v in rest.items())
    return f"{server} {name:<9} {ident} {extra}".rstrip()


# -- records: consumer and queries ------------------------------------------------------

@main.command()
@click.option("--tube", "tubes", multiple=True, help="Categories to consume (default: all).")
@records_option
@click.option("--burst", is_flag=True, help="Stop when no event is ready.")
@pass_state
def consume(state: State, tubes: tuple[str, ...], records_url: str | None, burst: bool) -> None:
    """Apply events from the events tubes to the submission records."""
    import signal

    from bystroq.consumer import Consumer
    from bystroq.records import open_store

    config = state.config()
    with (open_store(_records_url(state, records_url)) as store,
          Consumer(config, store, tubes or None) as consumer):
        def on_signal(signum: int, frame: object) -> None:
            consumer.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        click.echo(f"consuming into {store.url}", err=True)
        stats = consumer.run(burst=burst)
    click.echo(f"applied {stats.applied} events ({stats.malformed} malformed and "
               f"{stats.rejected} refused by the store, buried)", err=True)


@main.command()
@click.argument("submission_id")
@records_option
@click.option("--json", "as_json", is_flag=True)
@pass_state
def status(state: State, submission_id: str, records_url: str | None, as_json: bool) -> None:
    """A submission's record and its event timeline."""
    from bystroq.records import open_store

    store = open_store(_records_url(state, records_url), read_only=True)
    try:
        record = store.get(submission_id)
        if record is None:
            raise BystroqError(f"no submission {submission_id!r} in {store.url}")
        timeline = store.timeline(submission_id)
    finally:
        store.close()
    if as_json:
        click.echo(msgspec.json.encode({"record": record, "events": timeline}).decode())
        return
    click.echo(format_record(record))
    click.echo("")
    rows = [("at", "event", "attempt", "seq", "worker", "detail")]
    for e in timeline:
        detail = {k: v for k, v in e.body.items()
                  if k not in ("event", "submissionID", "queueID", "attempt", "seq", "worker",
                               "at")}
        rows.append((_time(e.at), e.event + ("" if e.applied else " (ignored)"),
                     str(e.attempt or ""), str(e.seq if e.seq is not None else ""),
                     e.worker or "", json.dumps(detail) if detail else ""))
    click.echo(format_table(rows))


def _time(at: float | None) -> str:
    import datetime

    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_record(record: Any) -> str:
    fields = [
        ("submission", record.submission_id), ("category", record.category),
        ("state", record.state), ("attempts", record.attempts),
        ("queueID", f"{record.queue_id} on {record.server}"), ("worker", record.worker),
        ("progress", f"{record.progress} done, {record.skipped} skipped"),
        ("messages", "; ".join(record.messages)), ("result", json.dumps(record.result)
                                                   if record.result is not None else None),
        ("reason", record.reason), ("batch", record.batch),
        ("submitted", _time(record.submitted_at)), ("started", _time(record.started_at)),
        ("finished", _time(record.finished_at)), ("updated", _time(record.updated_at)),
    ]
    return "\n".join(f"{name + ':':<11} {value}" for name, value in fields
                     if value not in (None, "", "-"))


@main.command(name="list")
@click.option("--tube", "category", help="Only this category.")
@click.option("--state", "state_name",
              type=click.Choice(STATES))
@click.option("--batch", help="Only this batch.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@records_option
@pass_state
def list_records(state: State, category: str | None, state_name: str | None,
                 batch: str | None, limit: int, as_json: bool, records_url: str | None) -> None:
    """Submission records, newest first, as a table."""
    from bystroq.records import open_store

    if category is not None:
        category = state.config().category_name(category)
    store = open_store(_records_url(state, records_url), read_only=True)
    try:
        records = store.list(category=category, state=state_name, batch=batch, limit=limit)
    finally:
        store.close()
    if as_json:
        click.echo(msgspec.json.encode(records).decode())
        return
    rows = [("submission", "category", "state", "attempts", "progress", "updated", "reason")]
    for r in records:
        rows.append((str(r.submission_id), r.category, str(r.state), str(r.attempts),
                     str(r.progress), _time(r.updated_at), (r.reason or "")[:60]))
    click.echo(format_table(rows))


@main.command()
@click.argument("submission_id")
@records_option
@pass_state
def cancel(state: State, submission_id: str, records_url: str | None) -> None:
    """Cancel a submission: not started, it never runs; running, its worker stops it."""
    from bystroq.cancel import cancel_submission
    from bystroq.records import open_store

    store = open_store(_records_url(state, records_url))
    try:
        click.echo(cancel_submission(store, submission_id))
    finally:
        store.close()


@main.command()
@click.argument("submission_id")
@records_option
@pass_state
def retry(state: State, submission_id: str, records_url: str | None) -> None:
    """Submit a failed or cancelled submission again (same submissionID, a new attempt)."""
    from bystroq.records import open_store
    from bystroq.resubmit import retry_submission

    config = state.config()
    store = open_store(_records_url(state, records_url))
    try:
        handle = retry_submission(config, store, submission_id)
    finally:
        store.close()
    click.echo(f"submitted again as job {handle.job_id} on {handle.server}")


@main.command()
@click.option("--tube", required=True)
@click.option("--kick", "kick_count", type=click.IntRange(min=1), help="Kick N back to ready.")
@click.option("--delete", "delete_all", is_flag=True, help="Delete every buried job.")
@click.option("--show", is_flag=True, help="List buried jobs (the default).")
@pass_state
def buried(state: State, tube: str, kick_count: int | None, delete_all: bool,
           show: bool) -> None:
    """Dead letters: show, kick or delete a tube's buried jobs on every server."""
    config = state.config()
    name = _tube_name(config, tube)
    if kick_count is not None:
        _per_server(inspect_mod.kick(config, name, kick_count), "kicked")
    elif delete_all:
        _per_server(inspect_mod.delete_buried(config, name), "deleted")
    else:
        found = inspect_mod.buried_jobs(config, name)
        if not found:
            click.echo(f"no buried job in {name}")
        for row in found:
            if isinstance(row, inspect_mod.ServerDown):
                click.echo(f"{row.server}: unreachable ({row.error})")
                continue
            job, count = row
            click.echo(f"{job.server}: {count} buried; oldest: job {job.job_id} (reserves "
                       f"{job.reserves}, age {job.age_s}s): "
                       f"{job.body.decode(errors='replace')[:200]}")


# -- batches ---------------------------------------------------------------------------

@main.group()
def batch() -> None:
    """Run a category over the records of a file, tracked together."""


@batch.command(name="create")
@click.option("--tube", required=True, help="Category (or its submission tube).")
@click.option("--records-file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="One job per record: JSON lines (.jsonl) or CSV with a header (.csv).")
@click.option("--shuffle/--no-shuffle", default=True, show_default=True)
@click.option("--seed", type=int, help="Seed of the shuffle (for a repeatable order).")
@click.option("--max-records", type=click.IntRange(min=1), help="Run at most N records.")
@click.option("--concurrency", type=click.IntRange(min=1), default=5, show_default=True,
              help="Jobs of this batch in flight at once, across all workers.")
@click.option("--error-policy", type=click.Choice(["continue", "stop"]), default="continue",
              show_default=True, help="stop: after the first failure, put no more jobs and "
              "cancel the ones not started.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Merged into every record (a record's own value wins).")
@click.option("--params-override", is_flag=True, help="--param values win over the records'.")
@click.option("--priority", type=click.IntRange(0, 2**32 - 1), default=2**16, show_default=True)
@click.option("--wait", is_flag=True, help="Wait with a progress bar (see `batch wait`).")
@records_option
@pass_state
def batch_create(state: State, tube: str, records_file: Path, shuffle: bool, seed: int | None,
                 max_records: int | None, concurrency: int, error_policy: str,
                 params: tuple[str, ...], params_override: bool, priority: int, wait: bool,
                 records_url: str | None) -> None:
    """Create a batch: check every record, store the batch, put its first jobs."""
    from bystroq.batches import create_batch, parse_params
    from bystroq.records import open_store

    config = state.config()
    with open_store(_records_url(state, records_url)) as store:
        created = create_batch(
            config, store, tube, records_file, shuffle=shuffle, seed=seed,
            max_records=max_records, concurrency=concurrency,
            error_policy="stop" if error_policy == "stop" else "continue",
            params=parse_params(params), params_override=params_override, priority=priority,
        )
        click.echo(f"{created.batch_id}: {created.total} jobs of {created.category}, "
                   f"concurrency {created.concurrency}, error policy {created.error_policy}")
        if wait:
            sys.exit(_wait(state, store, created.batch_id, consume=True))


@batch.command(name="list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@records_option
@pass_state
def batch_list(state: State, limit: int, records_url: str | None) -> None:
    """Batches, newest first."""
    from bystroq.batches import batch_status
    from bystroq.records import open_store

    with open_store(_records_url(state, records_url), read_only=True) as store:
        rows = [("batch", "category", "state", "done", "failed", "total", "created")]
        for b in store.list_batches(limit):
            status = batch_status(store, b.batch_id)
            rows.append((b.batch_id, b.category, b.state, str(status.done), str(status.failed),
                         str(b.total), _time(b.created_at)))
    click.echo(format_table(rows))


@batch.command(name="status")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
@records_option
@pass_state
def batch_status_cmd(state: State, batch_id: str, as_json: bool,
                     records_url: str | None) -> None:
    """Counts by state, percent done, rate, ETA, first failures."""
    from bystroq.batches import batch_status
    from bystroq.records import open_store

    with open_store(_records_url(state, records_url), read_only=True) as store:
        status = batch_status(store, batch_id)
    if as_json:
        click.echo(msgspec.json.encode({
            "batch": status.batch, "counts": status.counts, "done": status.done,
            "percent": status.percent, "rate_per_s": status.rate_per_s, "eta_s": status.eta_s,
            "failures": [{"submissionID": r.submission_id, "reason": r.reason}
                         for r in status.failures],
        }).decode())
        return
    b = status.batch
    click.echo(f"batch:      {b.batch_id} ({b.category}, concurrency {b.concurrency}, "
               f"error policy {b.error_policy})")
    click.echo(f"state:      {b.state}" + (f" ({b.reason})" if b.reason else ""))
    click.echo(f"done:       {status.done}/{b.total} ({status.percent:.1f}%)")
    order = ("pending", *STATES)
    click.echo("counts:     " + ", ".join(f"{name} {status.counts.get(name, 0)}"
                                         for name in order))
    rate = f"{status.rate_per_s:.1f} jobs/s" if status.rate_per_s else "-"
    eta = _duration(status.eta_s) if status.eta_s is not None else "-"
    click.echo(f"rate:       {rate}, ETA {eta}")
    for record in status.failures:
        click.echo(f"failure:    {record.submission_id}: {record.reason}")


@batch.command(name="cancel")
@click.argument("batch_id")
@records_option
@pass_state
def batch_cancel(state: State, batch_id: str, records_url: str | None) -> None:
    """No new jobs; queued ones deleted; running ones cancelled by their workers."""
    from bystroq.batches import cancel_batch
    from bystroq.records import open_store

    with open_store(_records_url(state, records_url)) as store:
        click.echo(cancel_batch(store, batch_id))


@batch.command(name="wait")
@click.argument("batch_id")
@click.option("--consume/--no-consume", default=True, show_default=True,
              help="Also apply events and feed the batch while waiting (safe beside other "
                   "consumers); --no-consume only watches the records.")
@records_option
@pass_state
def batch_wait(state: State, batch_id: str, consume: bool, records_url: str | None) -> None:
    """Wait for a batch with a progress bar; exit code 0 if every job completed, else 1."""
    from bystroq.records import open_store

    with open_store(_records_url(state, records_url)) as store:
        sys.exit(_wait(state, store, batch_id, consume))


def _wait(state: State, store: Any, batch_id: str, consume: bool) -> int:
    from bystroq.batches import wait_for_batch
    from bystroq.consumer import Consumer

    config = state.config()
    batch_row = store.get_batch(batch_id)
    if batch_row is None:
        raise BystroqError(f"no batch {batch_id!r} in {store.url}")
    consumer = Consumer(config, store, [batch_row.category]) if consume else None
    try:
        status = wait_for_batch(store, batch_id, consumer, _progress_printer())
    finally:
        if consumer is not None:
            consumer.close()
    b = status.batch
    click.echo(f"{b.batch_id} {b.state}: {status.counts.get('completed', 0)} completed, "
               f"{status.failed} failed, {status.counts.get('cancelled', 0)} cancelled of "
               f"{b.total}" + (f" ({b.reason})" if b.reason else ""))
    return 0 if b.state == "completed" else 1


def _progress_printer() -> Any:
    """A live bar on a terminal; on a pipe, a plain line when the count changes."""
    tty = sys.stdout.isatty()
    last: list[object] = [None, 0.0]

    def show(status: Any) -> None:
        b = status.batch
        rate = f"{status.rate_per_s:.1f}/s" if status.rate_per_s else "-/s"
        eta = _duration(status.eta_s) if status.eta_s is not None else "-"
        text = (f"{status.done}/{b.total} done, {status.failed} failed, {rate}, ETA {eta}")
        if tty:
            width = 30
            filled = int(width * status.done / b.total)
            click.echo(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K", nl=False)
            if b.state != "running":
                click.echo("")
        elif (status.done, status.failed) != last[0] or b.state != "running":
            click.echo(f"{b.batch_id}: {text}")
            last[0] = (status.done, status.failed)

    return show


def _duration(seconds_f: float) -> str:
    seconds = round(seconds_f)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
