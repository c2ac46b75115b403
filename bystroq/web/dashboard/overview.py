"""What the overview shows: each category's jobs per server, the last hour's finished jobs,
and warnings worth acting on."""

from __future__ import annotations

from dataclasses import dataclass

from bystroq.config import LoadedConfig
from bystroq.ops.servers import TubeStats, Unreachable, tube_stats
from bystroq.records import activity
from bystroq.records.store import Store
from bystroq.web.dashboard.chart import Chart, minute_chart

# Events waiting on an events tube past this: the consumer is behind.
EVENTS_BEHIND = 1000


@dataclass(frozen=True)
class CategoryRow:
    """A category's submission tube on one server (and how its events tube is doing)."""

    category: str
    tube: str
    server: str
    ready: int
    reserved: int
    delayed: int
    buried: int
    watching: int
    pause_left_s: int
    events_ready: int
    events_watching: int


@dataclass(frozen=True)
class Overview:
    rows: list[CategoryRow]
    down: list[Unreachable]
    warnings: list[str]
    chart: Chart


def overview(config: LoadedConfig, store: Store) -> Overview:
    stats = tube_stats(config)
    by_key = {(r.server, r.tube): r for r in stats if isinstance(r, TubeStats)}
    down = [r for r in stats if isinstance(r, Unreachable)]
    servers = sorted({r.server for r in stats if isinstance(r, TubeStats)})
    rows = []
    for name, tubes in sorted(config.config.beanstalkd.tubes.items()):
        for server in servers:
            sub, events = by_key.get((server, tubes.submission)), by_key.get(
                (server, tubes.events))
            if sub is None or events is None:
                continue
            rows.append(CategoryRow(name, sub.tube, server, sub.ready, sub.reserved,
                                    sub.delayed, sub.buried, sub.watching, sub.pause_left_s,
                                    events.ready, events.watching))
    return Overview(rows, down, warnings(rows, down),
                    minute_chart(activity.finished_per_minute(store)))


def warnings(rows: list[CategoryRow], down: list[Unreachable]) -> list[str]:
    out = [f"server {d.server} does not answer: {d.error}" for d in down]
    for row in rows:
        at = f"{row.category} on {row.server}"
        if row.ready and not row.watching:
            out.append(f"{at}: {row.ready} jobs ready and no worker watching "
                       f"(start `bystroq listen --tube {row.category}`)")
        if row.buried:
            out.append(f"{at}: {row.buried} buried jobs (see Dead letters)")
        if row.events_ready and not row.events_watching:
            out.append(f"{at}: {row.events_ready} events waiting and no consumer "
                       "(start `bystroq consume`)")
        elif row.events_ready > EVENTS_BEHIND:
            out.append(f"{at}: the consumer is behind by {row.events_ready} events")
    return out
