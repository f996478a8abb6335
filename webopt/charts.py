"""Forgery charts as inline SVG made on the server: no JavaScript, no external assets.

Pure functions from counts to markup, so a chart is tested as text. Each chart comes with its
numbers as a table (the text alternative), and each bar segment carries a <title> tooltip.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from gateway.store import EventCount

#: Okabe-Ito colours: told apart with the common colour-vision deficiencies.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#7f7f7f")
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 28, 10, 28


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    colour: str
    counts: tuple[int, ...]  # one per day

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Chart:
    """A stacked bar chart of events per day: the SVG, and the series for legend and table."""

    title: str
    days: tuple[dt.date, ...]
    series: tuple[Series, ...]
    svg: Markup

    @property
    def total(self) -> int:
        return sum(s.total for s in self.series)


def day_range(last: dt.date, days: int) -> tuple[dt.date, ...]:
    """`days` consecutive days ending with `last`."""
    return tuple(last - dt.timedelta(days=n) for n in range(days - 1, -1, -1))


def group_counts(
    counts: Iterable[EventCount],
    days: Sequence[dt.date],
    key: Callable[[EventCount], str],
    order: Sequence[str] = (),
    max_series: int = len(PALETTE),
) -> dict[str, list[int]]:
    """Counts per day for each value of `key`; `order` first, then the biggest; the rest as "other"."""
    index = {day: n for n, day in enumerate(days)}
    grouped: dict[str, list[int]] = {}
    for count in counts:
        if count.day in index:
            grouped.setdefault(key(count), [0] * len(days))[index[count.day]] += count.count
    names = [name for name in order if name in grouped]
    names += sorted((n for n in grouped if n not in names), key=lambda n: -sum(grouped[n]))
    if len(names) > max_series:
        kept, rest = names[: max_series - 1], names[max_series - 1 :]
        other = [sum(grouped[n][i] for n in rest) for i in range(len(days))]
        return {**{n: grouped[n] for n in kept}, "other": other}
    return {n: grouped[n] for n in names}


def _ceiling(value: int) -> int:
    """A round axis maximum at or above `value`: 1, 2, 5, 10, 20, 50..."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def stacked_bars(title: str, days: Sequence[dt.date], grouped: dict[str, list[int]], chart_id: str) -> Chart:
    series = tuple(
        Series(label, PALETTE[n % len(PALETTE)], tuple(counts)) for n, (label, counts) in enumerate(grouped.items())
    )
    top = _ceiling(max([1, *(sum(s.counts[i] for s in series) for i in range(len(days)))]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(days))
    total = sum(s.total for s in series)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{total} events from {days[0]} to {days[-1]}; the numbers are in the table'
        " below the chart.</desc>" if days else f'<desc id="{chart_id}-d">No days to show.</desc>',
    ]
    for value in (0, top // 2, top) if top > 1 else (0, top):
        y = TOP + plot_h - plot_h * value / top
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value}</text>')
    label_every = max(1, len(days) // 6)
    for i, day in enumerate(days):
        x = LEFT + i * slot
        base: float = TOP + plot_h
        for s in series:
            if s.counts[i]:
                height = plot_h * s.counts[i] / top
                base -= height
                parts.append(
                    f'<rect x="{x + slot * 0.1:.1f}" y="{base:.1f}" width="{slot * 0.8:.1f}" height="{height:.1f}"'
                    f' fill="{s.colour}"><title>{day:%d %b}: {s.counts[i]} {escape(s.label)}</title></rect>'
                )
        if (len(days) - 1 - i) % label_every == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">{day:%d %b}</text>'
            )
    parts.append("</svg>")
    return Chart(title, tuple(days), series, Markup("".join(parts)))
