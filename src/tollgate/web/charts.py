"""Usage drawn on the server as SVG: the bar of used against included, and the daily chart of
this period against the previous one. No script and no chart library: the page shows them
with JavaScript off, and the SVG's geometry is plain attributes (no inline style, so the CSP
stays strict)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH = 640
HEIGHT = 180
LEFT = 44  # room for the y labels
BOTTOM = 22  # room for the x labels
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class DailyChart:
    """The geometry of one meter's chart, ready for the template's <svg>."""

    width: int
    height: int
    current: list[Bar]
    previous: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    summary: str
    left: int
    plot_bottom: float


def _nice_ceiling(value: int) -> int:
    """Return a round number at or above `value` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1
    power = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return int(step * power)
    return 10 * power


def _short(value: int) -> str:
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            shown = value / size
            return f"{shown:.1f}".rstrip("0").rstrip(".") + suffix
    return str(value)


def daily_chart(
    *,
    start: datetime,
    current: list[int],
    previous: list[int],
    unit: str,
    now: datetime,
) -> DailyChart:
    """Lay out day `i` of this period beside day `i` of the previous one."""
    days = max(len(current), len(previous), 1)
    top = _nice_ceiling(max([*current, *previous, 0]))
    plot_width = WIDTH - LEFT
    plot_height = HEIGHT - BOTTOM - TOP
    slot = plot_width / days
    bar = max(slot * 0.38, 1.0)

    def bars(values: list[int], offset: float, label: str) -> list[Bar]:
        drawn = []
        for index, value in enumerate(values):
            height = plot_height * value / top
            day = (start + timedelta(days=index)).strftime("%b %-d")
            drawn.append(
                Bar(
                    x=round(LEFT + index * slot + offset, 2),
                    y=round(TOP + plot_height - height, 2),
                    width=round(bar, 2),
                    height=round(height, 2),
                    title=f"{label}, day {index + 1} ({day}): {value:,} {unit}",
                )
            )
        return drawn

    elapsed = min(max((now - start).days + 1, 0), len(current))
    y_ticks = [
        Tick(round(TOP + plot_height - plot_height * share, 2), _short(int(top * share)))
        for share in (0, 0.5, 1)
    ]
    every = 7 if days > 14 else 2 if days > 7 else 1
    x_ticks = [
        Tick(
            round(LEFT + index * slot + slot / 2, 2),
            (start + timedelta(days=index)).strftime("%b %-d"),
        )
        for index in range(0, days, every)
    ]
    this_total, last_total = sum(current[:elapsed]), sum(previous[:elapsed])
    summary = (
        f"Daily {unit}: {this_total:,} in the first {elapsed} days of this period, "
        f"{last_total:,} in the same days of the previous period."
    )
    return DailyChart(
        width=WIDTH,
        height=HEIGHT,
        current=bars(current[:elapsed], slot * 0.5, "This period"),
        previous=bars(previous, slot * 0.5 - bar, "Previous period"),
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        summary=summary,
        left=LEFT,
        plot_bottom=TOP + plot_height,
    )


def bar_percent(used: int, included: int | None) -> float:
    """Return how much of the usage bar to fill (0-100)."""
    if not included:
        return 0.0 if not used else 100.0
    return round(min(used / included, 1.0) * 100, 2)
