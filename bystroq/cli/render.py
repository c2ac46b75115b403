"""Everything the CLI prints: tables, a record, a timeline, a batch, the progress bar, JSON.

Terminal output goes through rich: colours and the live bar on a terminal; plain text when
stdout is not one (a pipe, a file, a test) or NO_COLOR is set, with lines never wrapped.
JSON is always one of the public views (bystroq.records.views).
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from bystroq.errors import DecodeError
from bystroq.messages import canonical
from bystroq.records.views import (
    EVENT_FIELDS,
    STATES,
    BatchStatusView,
    SubmissionStatusView,
    SubmissionView,
    View,
    WorkerView,
    to_json,
)

WIDE = 10_000  # columns for output that is not a terminal: never wrap or cut a line


def console(err: bool = False) -> Console:
    """A console on the current stdout (or stderr): styled on a terminal, plain otherwise."""
    stream = sys.stderr if err else sys.stdout
    terminal = stream.isatty()
    return Console(file=stream, width=None if terminal else WIDE, highlight=False, emoji=False,
                   soft_wrap=not terminal)


def echo(text: str, err: bool = False, style: str | None = None) -> None:
    console(err).print(text, markup=False, style=style)


def error(text: str) -> None:
    echo(f"error: {text}", err=True, style="bold red")


def warning(text: str) -> None:
    echo(f"warning: {text}", err=True, style="yellow")


def echo_json(view: View | list[Any]) -> None:
    """A public view as one line of JSON on stdout, unstyled."""
    click.echo(to_json(view))


def table(header: Sequence[str], rows: Sequence[Sequence[object]],
          styles: dict[str, str] | None = None) -> None:
    """Rows under a header, columns aligned; `styles` colours a cell by its text."""
    out = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for name in header:
        out.add_column(name, no_wrap=True, overflow="ignore")
    for row in rows:
        cells = ["" if cell is None else str(cell) for cell in row]
        style = next((styles[cell] for cell in cells if cell in styles), None) if (
            styles) else None
        out.add_row(*cells, style=style)
    console().print(out)


STATE_STYLES = {"completed": "green", "failed": "red", "cancelled": "magenta",
                "retrying": "yellow", "unknown": "yellow", "running": "cyan"}


def when(at: float | None) -> str:
    """A time, in UTC, saying so."""
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def cut(text: str | None, width: int) -> str:
    """`text` on one line, at most `width` characters; a cut one ends with an ellipsis."""
    line = " ".join((text or "").split())
    return line if len(line) <= width else line[:width - 1] + "…"


def count(n: int, noun: str) -> str:
    """`1 job`, `2 jobs`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def duration(seconds_f: float | None) -> str:
    if seconds_f is None:
        return "-"
    seconds = round(seconds_f)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    """`name:  value` lines, aligned; empty values left out."""
    for name, value in pairs:
        if value not in (None, "", "-"):
            echo(f"{name + ':':<11} {value}")


def submission(view: SubmissionView) -> None:
    fields([
        ("submission", view.submission_id), ("category", view.category),
        ("state", view.state), ("attempts", view.attempts),
        ("runs", view.runs if view.runs > 1 else None),
        ("queueID", f"{view.queue_id} on {view.server}" if view.queue_id is not None
                    else "not put yet" if view.state == "queued" else None),
        ("worker", view.worker),
        ("progress", f"{view.progress} done, {view.skipped} skipped"
                     + (f" of {view.total} ({view.percent}%)" if view.total else "")
                     + (f", about {duration(view.eta_s)} left" if view.eta_s else "")),
        ("messages", "; ".join(view.messages)),
        ("result", json.dumps(view.result) if view.result is not None else None),
        ("reason", view.reason), ("traceback", view.traceback), ("batch", view.batch),
        ("submitted", when(view.submitted_at)), ("started", when(view.started_at)),
        ("finished", when(view.finished_at)), ("updated", when(view.updated_at)),
    ])


def status(view: SubmissionStatusView) -> None:
    submission(view.submission)
    echo("")
    rows = []
    for e in view.timeline:
        detail = {k: v for k, v in e.message.items() if k not in EVENT_FIELDS}
        rows.append((when(e.at), e.event + ("" if e.applied else " (ignored)"),
                     e.attempt or "", e.seq if e.seq is not None else "", e.worker or "",
                     json.dumps(detail) if detail else ""))
    table(("at", "event", "attempt", "seq", "worker", "detail"), rows, STATE_STYLES)


def batch_status(view: BatchStatusView) -> None:
    b = view.batch
    rate = f"{view.rate_per_s:.1f} jobs/s" if view.rate_per_s else "-"
    fields([
        ("batch", f"{b.batch_id} ({b.category}, concurrency {b.concurrency}, "
                  f"error policy {b.error_policy})"),
        ("state", b.state + (f" ({b.reason})" if b.reason else "")),
        ("done", f"{view.done}/{b.total} ({view.percent:.1f}%)"),
        ("counts", ", ".join(f"{name} {view.counts.get(name, 0)}"
                             for name in ("pending", *STATES))),
        ("rate", f"{rate}, ETA {duration(view.eta_s)}"),
    ])
    for failure in view.failures:
        echo(f"{'failure:':<11} {failure.submission_id}: {failure.reason}")


def event_line(server: str, event: dict[str, Any] | bytes) -> str:
    """One event from an events tube as a line: server, event, submission, the rest."""
    if not isinstance(event, dict):
        return f"{server} (not JSON) {event!r}"
    with suppress(DecodeError):  # either spelling: submissionID, submissionId
        event = canonical(event)
    name = event.get("event", "?")
    ident = event.get("submissionID", f"queueID={event.get('queueID')}")
    rest = {k: v for k, v in event.items()
            if k not in EVENT_FIELDS - {"queueID", "attempt"}}
    extra = " ".join(f"{k}={json.dumps(v)}" for k, v in rest.items())
    return f"{server} {name:<9} {ident} {extra}".rstrip()


@contextmanager
def batch_progress(batch_id: str, total: int) -> Iterator[Callable[[BatchStatusView], None]]:
    """What to call with each status while waiting: a live bar on a terminal; elsewhere a
    plain line each time the counts change."""
    out = console()
    if not out.is_terminal:
        last: list[tuple[int, int] | None] = [None]

        def line(view: BatchStatusView) -> None:
            counts = (view.done, view.counts.get("failed", 0))
            if counts != last[0] or view.batch.state != "running":
                echo(f"{batch_id}: {_progress_text(view)}")
                last[0] = counts

        yield line
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task(batch_id, total=total, detail="")

        def update(view: BatchStatusView) -> None:
            bar.update(task, completed=view.done, detail=_progress_text(view))

        yield update


def _progress_text(view: BatchStatusView) -> str:
    rate = f"{view.rate_per_s:.1f}/s" if view.rate_per_s else "-/s"
    return (f"{view.done}/{view.batch.total} done, {view.counts.get('failed', 0)} failed, "
            f"{rate}, ETA {duration(view.eta_s)}")


WORKER_STYLES = {"running": "cyan", "quiet": "yellow", "stopping": "yellow", "gone": "red",
                 "stopped": "dim"}


def workers(views: Sequence[WorkerView], now: float) -> None:
    """Workers as a table: what each runs, and when it was last heard of."""
    table(("worker", "category", "state", "busy", "isolation", "version", "up", "last seen",
           "jobs"),
          [(v.worker_id, v.category, v.state, f"{v.slots_busy}/{v.slots_total}", v.isolation,
            v.version, duration(now - v.started_at), f"{duration(now - v.last_seen_at)} ago",
            cut(", ".join(str(job.submission_id if job.submission_id is not None
                              else f"queueID={job.queue_id}") for job in v.jobs), 60))
           for v in views], WORKER_STYLES)
