"""The server-made SVG charts: counts grouped per day and series, drawn as text, escaped."""

from __future__ import annotations

import datetime as dt

from gateway.store import EventCount, EventKind
from webopt.charts import PALETTE, day_range, group_counts, stacked_bars

DAY = dt.date(2026, 3, 10)


def test_day_range_ends_with_the_last_day() -> None:
    assert day_range(DAY, 3) == (dt.date(2026, 3, 8), dt.date(2026, 3, 9), DAY)


def test_counts_are_grouped_per_day_in_the_given_order_and_days_outside_are_dropped() -> None:
    days = day_range(DAY, 2)
    counts = [
        EventCount(DAY, EventKind.REJECT, "unsigned", 2),
        EventCount(DAY, EventKind.WARN, "unsigned", 1),
        EventCount(days[0], EventKind.REJECT, "bad_mac", 3),
        EventCount(DAY - dt.timedelta(days=5), EventKind.REJECT, "unsigned", 100),
    ]
    grouped = group_counts(counts, days, lambda c: c.kind.value, order=["warn", "reject"])
    assert grouped == {"warn": [0, 1], "reject": [3, 2]}


def test_series_beyond_the_palette_are_summed_as_other() -> None:
    counts = [EventCount(DAY, EventKind.REJECT, f"r{n}", n + 1) for n in range(len(PALETTE) + 2)]
    grouped = group_counts(counts, [DAY], lambda c: c.reason)
    assert len(grouped) == len(PALETTE) and "other" in grouped
    assert sum(v[0] for v in grouped.values()) == sum(c.count for c in counts)


def test_chart_is_an_accessible_svg_with_a_bar_per_nonzero_count() -> None:
    chart = stacked_bars("Forgeries <per> day", [DAY - dt.timedelta(days=1), DAY], {"a&b": [0, 2], "c": [1, 3]}, "x")
    svg = str(chart.svg)
    assert svg.startswith('<svg class="chart"') and 'role="img"' in svg and 'aria-labelledby="x-t x-d"' in svg
    assert "<title id=\"x-t\">Forgeries &lt;per&gt; day</title>" in svg
    assert svg.count("<rect") == 3
    assert "2 a&amp;b" in svg and "<script" not in svg
    assert chart.total == 6 and [s.total for s in chart.series] == [2, 4]


def test_an_empty_chart_still_draws_its_axis() -> None:
    chart = stacked_bars("Nothing", day_range(DAY, 30), {}, "e")
    assert "<rect" not in str(chart.svg) and chart.total == 0 and ">0</text>" in str(chart.svg)
