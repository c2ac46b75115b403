"""`bystroq workers`: the live workers (from their heartbeats), and quiet or stop one."""

from __future__ import annotations

import time

import click

from bystroq.cli import render
from bystroq.cli.context import BystroqGroup, State, json_option, pass_state, records_option
from bystroq.ops.workers import WorkerAction, ask_worker, list_workers


@click.group(cls=BystroqGroup, invoke_without_command=True)
@click.option("--all", "include_gone", is_flag=True,
              help="Also workers that stopped or went silent (kept for a day).")
@click.option("--tube", "category", help="Only this category.")
@json_option
@records_option
@pass_state
@click.pass_context
def workers(ctx: click.Context, state: State, include_gone: bool, category: str | None,
            as_json: bool, records_url: str | None) -> None:
    """Live workers, as the events consumer last heard of them (a worker silent for three
    heartbeat intervals is gone). `bystroq workers quiet|stop ID` asks one to stop taking
    jobs, or to stop."""
    if ctx.invoked_subcommand is not None:
        return
    if category is not None:
        category = state.config().resolve(category).name
    with state.store(records_url, read_only=True) as store:
        views = list_workers(store, include_gone=include_gone, category=category)
    if as_json:
        render.echo_json(views)
        return
    render.workers(views, time.time())
    if not views:
        render.echo("no live workers heard of (workers beat to the events consumer: is "
                    "`bystroq consume` running?)" if not include_gone else "no workers",
                    err=True)


def _ask(state: State, worker_id: str, records_url: str | None, as_json: bool,
         action: WorkerAction) -> None:
    with state.store(records_url, read_only=True) as store:
        view = ask_worker(state.config(), store, worker_id, action)
    if as_json:
        render.echo_json(view)
        return
    render.echo(f"{worker_id}: {action.value} request sent; its state changes with its "
                "next heartbeat")


@workers.command()
@click.argument("worker_id")
@records_option
@json_option
@pass_state
def quiet(state: State, worker_id: str, records_url: str | None, as_json: bool) -> None:
    """Stop taking jobs: running jobs finish, the worker stays (state `quiet`)."""
    _ask(state, worker_id, records_url, as_json, WorkerAction.QUIET)


@workers.command()
@click.argument("worker_id")
@records_option
@json_option
@pass_state
def stop(state: State, worker_id: str, records_url: str | None, as_json: bool) -> None:
    """Stop as on SIGTERM: no more jobs taken, running ones finish, then it exits."""
    _ask(state, worker_id, records_url, as_json, WorkerAction.STOP)
