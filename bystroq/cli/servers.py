"""Commands on the servers' tubes: stats, peek, kick, buried, pause, resume, purge,
events."""

from __future__ import annotations

import json
import sys

import click

from bystroq.cli import render
from bystroq.cli.context import (
    BystroqCommand,
    State,
    json_option,
    pass_state,
    records_option,
)
from bystroq.ops import servers, tubes
from bystroq.ops.events import watch_events, watchers
from bystroq.ops.servers import Peeked, Unreachable, tube_name
from bystroq.records.views import (
    CountView,
    PeekedJobView,
    ServerErrorView,
    StatsView,
)


@click.command(cls=BystroqCommand)
@click.option("--tube", "tubes", multiple=True, help="Tube(s) to show (default: configured).")
@json_option
@pass_state
def stats(state: State, tubes: tuple[str, ...], as_json: bool) -> None:
    """Jobs per server and tube: ready, reserved, delayed, buried, and workers watching."""
    rows = servers.tube_stats(state.config(), tubes)
    view = servers.stats_view(rows)
    every_server_down = not view.tubes and bool(view.unreachable)
    if as_json:
        render.echo_json(view)
    else:
        _stats_table(view)
    if every_server_down:
        sys.exit(1)


def _stats_table(view: StatsView) -> None:
    table: list[tuple[object, ...]] = [
        (t.server, t.tube, t.ready, t.reserved, t.delayed, t.buried, t.watching)
        for t in view.tubes]
    table += [(down.server, f"DOWN: {down.error}", "", "", "", "", "")
              for down in view.unreachable]
    render.table(("server", "tube", "ready", "reserved", "delayed", "buried", "watching"),
                 table)


def _error(row: Unreachable) -> ServerErrorView:
    return ServerErrorView(server=row.server, error=row.error)


def _peeked(job: Peeked, buried: int | None = None) -> PeekedJobView:
    return PeekedJobView(server=job.server, queue_id=job.job_id, reserves=job.reserves,
                         age_s=job.age_s, body=job.body.decode(errors="replace"),
                         buried=buried)


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True)
@click.option("--state", "job_state", type=click.Choice(["ready", "delayed", "buried"]),
              default="ready", show_default=True)
@json_option
@pass_state
def peek(state: State, tube: str, job_state: str, as_json: bool) -> None:
    """Show the next ready, delayed or buried job of a tube on each server."""
    config = state.config()
    found = servers.peek(config, tube_name(config, tube), job_state)
    if as_json:
        render.echo_json([_peeked(job) if isinstance(job, Peeked) else _error(job)
                          for job in found])
        return
    if not found:
        render.echo(f"no {job_state} job in {tube}")
    for job in found:
        if isinstance(job, Unreachable):
            render.echo(f"{job.server}: unreachable ({job.error})")
            continue
        render.echo(f"{job.server} job {job.job_id} (reserves {job.reserves}, age "
                    f"{job.age_s}s): {job.body.decode(errors='replace')}")


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True)
@click.option("--bound", type=click.IntRange(min=1), default=1000, show_default=True)
@json_option
@pass_state
def kick(state: State, tube: str, bound: int, as_json: bool) -> None:
    """Move buried (else delayed) jobs back to ready, on each server."""
    config = state.config()
    _per_server(servers.kick(config, tube_name(config, tube), bound), "kicked", as_json)


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True, help="Category (or tube) to pause.")
@click.option("--for", "seconds", type=click.IntRange(min=1, max=2**32 - 1), required=True,
              help="Seconds no job of the tube is given out (beanstalkd's pause-tube).")
@json_option
@pass_state
def pause(state: State, tube: str, seconds: int, as_json: bool) -> None:
    """Pause a tube on each server: workers get none of its jobs until it ends."""
    config = state.config()
    _per_server(tubes.pause(config, tube_name(config, tube), seconds),
                f"paused for {seconds} s (1) or no such tube yet (0):", as_json)


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True, help="Category (or tube) to resume.")
@json_option
@pass_state
def resume(state: State, tube: str, as_json: bool) -> None:
    """End a tube's pause on each server."""
    config = state.config()
    _per_server(tubes.pause(config, tube_name(config, tube), 0),
                "resumed (1) or no such tube yet (0):", as_json)


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True, help="Category (or tube) to empty.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def purge(state: State, tube: str, yes: bool, as_json: bool) -> None:
    """Delete every ready, delayed and buried job of a tube on each server (running jobs
    finish as they are). Asks first unless --yes."""
    config = state.config()
    name = tube_name(config, tube)
    if not yes and not click.confirm(f"delete every waiting and buried job of tube {name!r} "
                                     "on every server?", err=True):
        raise click.Abort()
    _per_server(tubes.purge(config, name), "deleted", as_json)


def _per_server(counts: dict[str, int | Unreachable], done: str, as_json: bool) -> None:
    views = [CountView(server=server, count=None, error=count.error)
             if isinstance(count, Unreachable) else CountView(server=server, count=count)
             for server, count in counts.items()]
    if as_json:
        render.echo_json(views)
        return
    for view in views:
        render.echo(f"{view.server}: unreachable ({view.error})" if view.error is not None
                    else f"{view.server}: {done} {view.count}")


@click.command(cls=BystroqCommand)
@click.option("--tube", required=True)
@click.option("--kick", "kick_count", type=click.IntRange(min=1), help="Kick N back to ready.")
@click.option("--delete", "delete_all", is_flag=True, help="Delete every buried job.")
@click.option("--show", is_flag=True, help="List buried jobs (the default).")
@json_option
@pass_state
def buried(state: State, tube: str, kick_count: int | None, delete_all: bool,
           show: bool, as_json: bool) -> None:
    """Dead letters: show, kick or delete a tube's buried jobs on every server."""
    config = state.config()
    name = tube_name(config, tube)
    if kick_count is not None:
        _per_server(servers.kick(config, name, kick_count), "kicked", as_json)
        return
    if delete_all:
        _per_server(servers.delete_buried(config, name), "deleted", as_json)
        return
    found = servers.buried_jobs(config, name)
    if as_json:
        render.echo_json([_peeked(*row) if isinstance(row, tuple) else _error(row)
                          for row in found])
        return
    if not found:
        render.echo(f"no buried job in {name}")
    for row in found:
        if isinstance(row, Unreachable):
            render.echo(f"{row.server}: unreachable ({row.error})")
            continue
        job, count = row
        render.echo(f"{job.server}: {count} buried; oldest: job {job.job_id} (reserves "
                    f"{job.reserves}, age {job.age_s}s): "
                    f"{job.body.decode(errors='replace')[:200]}")


@click.command(cls=BystroqCommand)
@click.option("--tube", help="Only this category's events (default: every category).")
@click.option("--last", type=click.IntRange(min=0), default=20, show_default=True,
              help="Start with about the last N events stored.")
@click.option("--follow", is_flag=True, help="Keep printing events as they are stored.")
@click.option("--from-tube", is_flag=True,
              help="Read the events tube itself instead, taking (consuming) each event: "
                   "only where no records consumer runs.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object a line: the event as on the wire, plus where it is from.")
@records_option
@pass_state
def events(state: State, tube: str | None, last: int, follow: bool, from_tube: bool,
           as_json: bool, records_url: str | None) -> None:
    """Print events, one line each: by default those the records consumer stored (nothing
    is taken from the tubes), or with --from-tube, consumed from an events tube."""
    config = state.config()
    try:
        if from_tube:
            _events_from_tube(state, tube, follow, as_json)
            return
        category = None
        if tube is not None:  # a category, or its submission or events tube
            events_tube = tube_name(config, tube, events=True)
            category = next((key for key, conf in config.config.beanstalkd.tubes.items()
                             if events_tube in (conf.events, conf.submission)), tube)
        with state.store(records_url, read_only=True) as store:
            for event in watch_events(store, category=category, last=last, follow=follow):
                if as_json:
                    click.echo(json.dumps({"id": event.id, "category": event.category,
                                           **event.body}))
                else:
                    render.echo(render.event_line(event.category, event.body))
    except KeyboardInterrupt:
        pass


def _events_from_tube(state: State, tube: str | None, follow: bool, as_json: bool) -> None:
    config = state.config()
    if tube is None:
        raise click.UsageError("--from-tube needs --tube: the category whose events to take")
    name = tube_name(config, tube, events=True)
    watching = watchers(config, name)
    if watching:
        render.warning(f"{watching} connection(s) already watch {name} (a records consumer?):"
                       " each event printed here is taken from it and never reaches its "
                       "records; drop --from-tube to watch without taking")
    for server, event in servers.follow_events(config, name, follow):
        if as_json:
            payload = event if isinstance(event, dict) else {"raw": event.decode("latin-1")}
            click.echo(json.dumps({"server": server.name, **payload}))
        else:
            render.echo(render.event_line(server.name, event))
