"""Commands on submission records: status, list, cancel, retry."""

from __future__ import annotations

import click

from bystroq.cli import render
from bystroq.cli.context import BystroqCommand, State, json_option, pass_state, records_option
from bystroq.errors import BystroqError
from bystroq.messages import key_to_submission_id
from bystroq.ops.cancel import cancel_submission
from bystroq.ops.retry import retry_submission
from bystroq.records.views import (
    STATES,
    CancelView,
    SubmittedView,
    status_view,
    submission_view,
)


@click.command(cls=BystroqCommand)
@click.argument("submission_id")
@records_option
@json_option
@pass_state
def status(state: State, submission_id: str, records_url: str | None, as_json: bool) -> None:
    """A submission's record and its event timeline."""
    with state.store(records_url, read_only=True) as store:
        record = store.get(submission_id)
        if record is None:
            raise BystroqError(f"no submission {submission_id!r} in {store.url}")
        view = status_view(record, store.timeline(submission_id))
    if as_json:
        render.echo_json(view)
    else:
        render.status(view)


@click.command(name="list", cls=BystroqCommand)
@click.option("--tube", "category", help="Only this category.")
@click.option("--state", "state_name", type=click.Choice(STATES))
@click.option("--batch", help="Only this batch.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@records_option
@pass_state
def list_records(state: State, category: str | None, state_name: str | None,
                 batch: str | None, limit: int, as_json: bool, records_url: str | None) -> None:
    """Submission records, newest first, as a table."""
    if category is not None:
        category = state.config().resolve(category).name
    with state.store(records_url, read_only=True) as store:
        views = [submission_view(record) for record in store.list(
            category=category, state=state_name, batch=batch, limit=limit + 1)]
    more, views = len(views) > limit, views[:limit]
    if as_json:
        render.echo_json(views)
        return
    render.table(
        ("submission", "category", "state", "attempts", "runs", "progress", "updated",
         "reason"),
        [(v.submission_id, v.category, v.state, v.attempts,
          v.runs if v.runs == 1 else f"{v.runs} !", v.progress, render.when(v.updated_at),
          render.cut(v.reason, 60)) for v in views], render.STATE_STYLES)
    if any(v.runs > 1 for v in views):
        render.echo("(runs !: put more than once, by `retry` or a duplicate submit; "
                    "`bystroq status ID` shows every run)", err=True)
    if more:
        render.echo(f"(the newest {render.count(limit, 'record')}; more exist: raise --limit "
                    "or filter with --state, --tube, --batch)", err=True)


@click.command(cls=BystroqCommand)
@click.argument("submission_id")
@records_option
@json_option
@pass_state
def cancel(state: State, submission_id: str, records_url: str | None, as_json: bool) -> None:
    """Cancel a submission: not started, it never runs; running, its worker stops it."""
    with state.store(records_url) as store:
        outcome = cancel_submission(store, submission_id)
    if as_json:
        render.echo_json(CancelView(submission_id=key_to_submission_id(submission_id),
                                    result=outcome.result.value, message=outcome.message))
    else:
        render.echo(outcome.message)


@click.command(cls=BystroqCommand)
@click.argument("submission_id")
@records_option
@json_option
@pass_state
def retry(state: State, submission_id: str, records_url: str | None, as_json: bool) -> None:
    """Submit a failed or cancelled submission again (same submissionID, a new attempt)."""
    with state.store(records_url) as store:
        handle = retry_submission(state.config(), store, submission_id)
    if as_json:
        render.echo_json(SubmittedView(
            submission_id=key_to_submission_id(submission_id), queue_id=handle.job_id,
            server=handle.server.name, tube=handle.tube))
    else:
        render.echo(f"submitted again as job {handle.job_id} on {handle.server}")
