"""The overview's chart: jobs completed and failed per minute, drawn as SVG on the server
(no script, readable as a table too)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 720, 180, 12, 22, 36


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # completed or failed
    count: int
    minute: int  # minutes before now (0: this minute)


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int
    width: int
    height: int
    base_y: float
    left: int
    completed: int
    failed: int
    ticks: list[tuple[float, str]]  # x, label


def minute_chart(per_minute: dict[str, list[int]]) -> Chart:
    """Stacked bars, completed under failed, one pair a minute, oldest on the left."""
    completed, failed = per_minute["completed"], per_minute["failed"]
    minutes = len(completed)
    peak = max([c + f for c, f in zip(completed, failed, strict=True)] + [1])
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT) / minutes
    bars = []
    for n, (done, bad) in enumerate(zip(completed, failed, strict=True)):
        x = LEFT + n * step + 1
        y: float = HEIGHT - BOTTOM
        for kind, count in (("completed", done), ("failed", bad)):
            if count:
                h = plot_h * count / peak
                y -= h
                bars.append(Bar(round(x, 1), round(y, 1), round(step - 2, 1), round(h, 1),
                                kind, count, minutes - 1 - n))
    ticks = [(round(LEFT + n * step, 1), f"-{minutes - n} min")
             for n in range(0, minutes, max(1, minutes // 6))]
    return Chart(bars, peak, WIDTH, HEIGHT, HEIGHT - BOTTOM, LEFT, sum(completed),
                 sum(failed), ticks)
