"""`bystroq batch ...`: create, list, status, cancel, wait."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bystroq.cli import render
from bystroq.cli.context import BystroqGroup, State, json_option, pass_state, records_option
from bystroq.config import DEFAULT_PRIORITY
from bystroq.errors import BystroqError
from bystroq.ops.batches import (
    BatchStatus,
    batch_status,
    cancel_batch,
    create_batch,
    parse_params,
    wait_for_batch,
)
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records.store import BatchStore
from bystroq.records.views import BatchCancelView, BatchStatusView, batch_view, failure_view


def status_view(status: BatchStatus) -> BatchStatusView:
    return BatchStatusView(batch=batch_view(status.batch), counts=status.counts,
                           done=status.done, percent=status.percent,
                           rate_per_s=status.rate_per_s, eta_s=status.eta_s,
                           failures=[failure_view(r) for r in status.failures])


@click.group(cls=BystroqGroup)
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
@click.option("--priority", type=click.IntRange(0, 2**32 - 1), default=DEFAULT_PRIORITY,
              show_default=True)
@click.option("--wait", is_flag=True, help="Wait with a progress bar (see `batch wait`).")
@json_option
@records_option
@pass_state
def batch_create(state: State, tube: str, records_file: Path, shuffle: bool, seed: int | None,
                 max_records: int | None, concurrency: int, error_policy: str,
                 params: tuple[str, ...], params_override: bool, priority: int, wait: bool,
                 as_json: bool, records_url: str | None) -> None:
    """Create a batch: check every record, store the batch, put its first jobs."""
    config = state.config()
    with state.store(records_url) as store:
        with state.app():
            created = create_batch(
                config, store, tube, records_file, shuffle=shuffle, seed=seed,
                max_records=max_records, concurrency=concurrency,
                error_policy="stop" if error_policy == "stop" else "continue",
                params=parse_params(params), params_override=params_override,
                priority=priority,
            )
        if as_json:
            render.echo_json(batch_view(created))
        else:
            render.echo(f"{created.batch_id}: {render.count(created.total, 'job')} of "
                        f"{created.category}, "
                        f"concurrency {created.concurrency}, error policy "
                        f"{created.error_policy}")
        if wait:
            sys.exit(_wait(state, store, created.batch_id, consume=True))


@batch.command(name="list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@records_option
@pass_state
def batch_list(state: State, limit: int, as_json: bool, records_url: str | None) -> None:
    """Batches, newest first."""
    with state.store(records_url, read_only=True) as store:
        views = [status_view(batch_status(store, b.batch_id))
                 for b in store.list_batches(limit)]
    if as_json:
        render.echo_json(views)
        return
    render.table(("batch", "category", "state", "done", "failed", "total", "created"),
                 [(v.batch.batch_id, v.batch.category, v.batch.state, v.done,
                   v.counts.get("failed", 0), v.batch.total, render.when(v.batch.created_at))
                  for v in views], render.STATE_STYLES)


@batch.command(name="status")
@click.argument("batch_id")
@json_option
@records_option
@pass_state
def batch_status_cmd(state: State, batch_id: str, as_json: bool,
                     records_url: str | None) -> None:
    """Counts by state, percent done, rate, ETA, first failures."""
    with state.store(records_url, read_only=True) as store:
        view = status_view(batch_status(store, batch_id))
    if as_json:
        render.echo_json(view)
    else:
        render.batch_status(view)


@batch.command(name="cancel")
@click.argument("batch_id")
@json_option
@records_option
@pass_state
def batch_cancel(state: State, batch_id: str, as_json: bool, records_url: str | None) -> None:
    """No new jobs; queued ones deleted; running ones cancelled by their workers."""
    with state.store(records_url) as store:
        done = cancel_batch(store, batch_id)
    if as_json:
        render.echo_json(BatchCancelView(batch_id=done.batch_id, deleted=done.deleted,
                                         requested=done.requested))
    else:
        render.echo(f"{batch_id}: cancelled; {done}")


@batch.command(name="wait")
@click.argument("batch_id")
@click.option("--consume/--no-consume", default=True, show_default=True,
              help="Also apply events and feed the batch while waiting (safe beside other "
                   "consumers); --no-consume only watches the records.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0),
              help="Give up waiting after this many seconds (exit code 3; the batch goes on).")
@records_option
@pass_state
def batch_wait(state: State, batch_id: str, consume: bool, timeout_s: float | None,
               records_url: str | None) -> None:
    """Wait for a batch with a progress bar; exit code 0 if every job completed, 1 if it
    ended otherwise, 3 if --timeout passed first."""
    with state.store(records_url) as store:
        code = _wait(state, store, batch_id, consume, timeout_s)
    sys.exit(code)


def _wait(state: State, store: BatchStore, batch_id: str, consume: bool,
          timeout_s: float | None = None) -> int:
    batch_row = store.get_batch(batch_id)
    if batch_row is None:
        raise BystroqError(f"no batch {batch_id!r} in {store.url}")
    consumer = ConsumeAndFeed(state.config(), store, [batch_row.category]) if consume else None
    try:
        with render.batch_progress(batch_id, batch_row.total) as show:
            status = wait_for_batch(store, batch_id, consumer,
                                    lambda status: show(status_view(status)), timeout_s)
    finally:
        if consumer is not None:
            consumer.close()
    b = status.batch
    render.echo(f"{b.batch_id} {b.state}: {status.counts.get('completed', 0)} completed, "
                f"{status.failed} failed, {status.counts.get('cancelled', 0)} cancelled of "
                f"{b.total}" + (f" ({b.reason})" if b.reason else ""),
                style=render.STATE_STYLES.get(b.state))
    if b.state == "running":
        render.echo(f"{b.batch_id}: still running after {timeout_s} s; it goes on", err=True)
        return 3
    return 0 if b.state == "completed" else 1
