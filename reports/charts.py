"""Charts as inline SVG drawn on the server from plain values (numbers and labels): a trend, a sparkline, a
latency histogram of two series on one logarithmic axis, and a status-class mix. No script and no outside
reference, so they read under the report's CSP (`default-src 'none'; style-src 'unsafe-inline'`).

Every text is escaped where it is placed, and `_svg` is the one place the result is marked safe. Colours
come from the page's stylesheet by class (`.compared`, `.open`, `.rule`, `.series-0`, `.part-2xx`, ...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

from markupsafe import Markup, escape

WIDE, TALL = 480, 136  # every chart's viewBox but the sparkline and the mix
LEFT, RIGHT, TOP, BASE = 44.0, 476.0, 26.0, 100.0  # the plot area; rules' labels sit above TOP
PLOT = RIGHT - LEFT


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bar of a trend: what was compared, drawn with its open and accepted divergences on it."""

    label: str  # when: "2026-12-05 14:03 UTC"
    compared: int
    open: int  # diverged and not accepted: what the gates count
    accepted: int = 0  # diverged, with an accepted signature


@dataclass(frozen=True, slots=True)
class Rule:
    """A labelled vertical rule: a rollout step that changed, where it happened."""

    at: float  # in buckets from the first bucket's start (2.5: half way into the third)
    label: str  # drawn beside the rule: "5% → 25%"
    title: str  # the whole story: when, what, why


@dataclass(frozen=True, slots=True)
class Trend:
    title: str  # "last hour, per minute"
    buckets: tuple[Bucket, ...]
    rules: tuple[Rule, ...] = ()
    ticks: tuple[tuple[int, str], ...] = ()  # (bucket index, label); index len(buckets): the right edge

    @property
    def summary(self) -> str:
        compared = sum(b.compared for b in self.buckets)
        if not compared:
            return "no comparisons"
        opened, accepted = sum(b.open for b in self.buckets), sum(b.accepted for b in self.buckets)
        return f"{opened} of {compared} comparisons open ({opened / compared:.1%}), {accepted} more accepted"


@dataclass(frozen=True, slots=True)
class Spark:
    title: str  # "divergences per hour, last 14 days"
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # "legacy"
    counts: tuple[int, ...]  # one per bin of the histogram


@dataclass(frozen=True, slots=True)
class Histogram:
    """Series side by side in each bin, each as shares of its own total, on one logarithmic axis."""

    title: str
    bounds: tuple[float, ...]  # each bin's upper bound in seconds, ascending; a bin starts at the one before
    series: tuple[Series, ...]
    marks: tuple[tuple[float, str], ...] = ()  # (seconds, label): a rule across the axis, when in range


@dataclass(frozen=True, slots=True)
class Mix:
    """A bar per row (a side), split into its categories (status classes), each a share of the row."""

    title: str
    rows: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # (row, ((category, count), ...))


def trend(chart: Trend) -> Markup:
    most = max((b.compared for b in chart.buckets), default=0)
    slot = PLOT / max(len(chart.buckets), 1)
    parts = [*_frame(str(most), "0")]  # the tallest bar: the most compared in a bucket
    for n, bucket in enumerate(chart.buckets):
        parts.append(_bucket(bucket, LEFT + n * slot, slot, most))
    for n, rule in enumerate(chart.rules):
        parts.append(_rule(LEFT + rule.at * slot, 9.0 + 9 * (n % 2), rule.label, rule.title))
    parts += _ticks((LEFT + index * slot, label) for index, label in chart.ticks)
    parts += _legend(["compared", "open", "accepted"], ["compared", "open", "accepted"])
    return _svg("trend", WIDE, TALL, f"{chart.title}: {chart.summary}", parts)


def _bucket(bucket: Bucket, x: float, slot: float, most: int) -> str:
    """A bar of the compared count, its open share drawn from the base up and its accepted share above it."""
    width = max(slot - 1, 0.5)
    title = f"{bucket.label}: no comparisons"
    if not bucket.compared:
        return f'<g class="bucket"><title>{escape(title)}</title>{_rect("none", x, BASE - 1, width, 1)}</g>'
    height = max((BASE - TOP) * bucket.compared / most, 1.0)
    # A few divergences among many comparisons stay visible (1.5 units at least), within the bar.
    opened = min(max(height * bucket.open / bucket.compared, 1.5), height) if bucket.open else 0.0
    accepted = min(max(height * bucket.accepted / bucket.compared, 1.5), height - opened) if bucket.accepted else 0.0
    title = (f"{bucket.label}: {bucket.open} of {bucket.compared} compared open "
             f"({bucket.open / bucket.compared:.1%}), {bucket.accepted} more accepted")
    return (f'<g class="bucket"><title>{escape(title)}</title>{_rect("compared", x, BASE - height, width, height)}'
            + (_rect("open", x, BASE - opened, width, opened) if opened else "")
            + (_rect("accepted", x, BASE - opened - accepted, width, accepted) if accepted else "") + "</g>")


def sparkline(chart: Spark, width: float = 96.0, height: float = 16.0) -> Markup:
    """A line of the counts, scaled to its box; nothing when every count is 0."""
    if not any(chart.counts):
        return Markup("")
    most, step = max(chart.counts), width / max(len(chart.counts) - 1, 1)
    points = " ".join(f"{n * step:.1f},{height - count / most * (height - 1):.1f}"
                      for n, count in enumerate(chart.counts))
    return _svg("spark", width, height, f"{chart.title}: {sum(chart.counts)} in all, at most {most}",
                [f'<polyline points="{points}"/>'])


def histogram(chart: Histogram) -> Markup:
    if not chart.bounds:
        return Markup("")
    lowest = chart.bounds[0] ** 2 / chart.bounds[1] if len(chart.bounds) > 1 else chart.bounds[0] / 1.2
    x = _log_axis(lowest, chart.bounds[-1])
    totals = [sum(s.counts) or 1 for s in chart.series]
    tallest = max((n / t for s, t in zip(chart.series, totals, strict=True) for n in s.counts), default=0) or 1
    parts = [*_frame(f"{tallest:.0%}", "0%")]  # the tallest bar: this share of its side
    edges = (lowest, *chart.bounds)
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        share = (x(high) - x(low)) / max(len(chart.series), 1)
        for k, (series, total) in enumerate(zip(chart.series, totals, strict=True)):
            count = series.counts[index]
            height = (BASE - TOP) * count / total / tallest
            title = f"{series.name}: {count} of {total} ({count / total:.1%}) in {_ms(low)} to {_ms(high)}"
            parts.append(f'<g class="bin"><title>{escape(title)}</title>'
                         f'{_rect(f"series-{k}", x(low) + k * share, BASE - height, max(share - 0.5, 0.5), height)}</g>')
    parts += [_rule(x(seconds), 9.0, label, label) for seconds, label in chart.marks
              if lowest <= seconds <= chart.bounds[-1]]
    parts += _ticks((x(s), _ms(s)) for s in _log_ticks(lowest, chart.bounds[-1]))
    parts += _legend([s.name for s in chart.series], [f"series-{k}" for k in range(len(chart.series))])
    return _svg("histogram", WIDE, TALL, chart.title, parts)


def mix(chart: Mix) -> Markup:
    """One bar a row across the width, a segment a category with a count, its share in its title."""
    row_height, top = 18.0, 4.0
    parts = []
    for n, (row, categories) in enumerate(chart.rows):
        y, total, at = top + n * (row_height + 6), sum(count for _, count in categories), LEFT
        parts.append(f'<text x="{LEFT - 4}" y="{y + 13}" text-anchor="end">{escape(row)}</text>')
        if not total:
            parts.append(f'<g class="part"><title>{escape(row)}: no answers</title>'
                         f'{_rect("none", LEFT, y, PLOT, row_height)}</g>')
        for category, count in categories:
            if not count:
                continue
            width = PLOT * count / total
            title = f"{row} {category}: {count} of {total} ({count / total:.1%})"
            parts.append(f'<g class="part"><title>{escape(title)}</title>'
                         f'{_rect(f"part-{_token(category)}", at, y, width, row_height)}'
                         + (f'<text x="{at + 3:.2f}" y="{y + 13}">{escape(category)}</text>' if width > 28 else "")
                         + "</g>")
            at += width
    height = top + len(chart.rows) * (row_height + 6) + 14
    seen = dict.fromkeys(c for _, categories in chart.rows for c, count in categories if count)
    parts += _legend(list(seen), [f"part-{_token(c)}" for c in seen], height - 4)
    return _svg("mix", WIDE, height, chart.title, parts)


def draw(chart: Trend | Spark | Histogram | Mix | None) -> Markup:
    """The chart's SVG (the template's `svg` filter); nothing for None."""
    if chart is None:
        return Markup("")
    return DRAW[type(chart)](chart)  # type: ignore[operator]


DRAW = {Trend: trend, Spark: sparkline, Histogram: histogram, Mix: mix}


def _svg(kind: str, width: float, height: float, title: str, parts: list[str]) -> Markup:
    """The one place markup is marked safe: every text inside was escaped where it was placed."""
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" data-chart="{kind}" '
                  f'viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{escape(title)}">'
                  f'<title>{escape(title)}</title>{"".join(parts)}</svg>')


def _frame(top: str, bottom: str) -> list[str]:
    return [f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{RIGHT}" y2="{TOP}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{BASE}" x2="{RIGHT}" y2="{BASE}"/>',
            f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{escape(top)}</text>',
            f'<text x="{LEFT - 4}" y="{BASE + 3}" text-anchor="end">{escape(bottom)}</text>']


def _ticks(ticks: Iterable[tuple[float, str]]) -> list[str]:
    parts = []
    for x, label in ticks:
        anchor = "start" if x <= LEFT + 1 else "end" if x >= RIGHT - 1 else "middle"
        parts.append(f'<line class="axis" x1="{x:.2f}" y1="{BASE}" x2="{x:.2f}" y2="{BASE + 4}"/>'
                     f'<text x="{x:.2f}" y="{BASE + 14}" text-anchor="{anchor}">{escape(label)}</text>')
    return parts


def _legend(names: list[str], classes: list[str], y: float = TALL - 6) -> list[str]:
    """A key under the axis, right-aligned, in reading order: a swatch and a name each."""
    x = RIGHT - sum(6.0 * len(name) + 18 for name in names)
    parts = []
    for name, kind in zip(names, classes, strict=True):
        parts.append(f'<g class="key">{_rect(kind, x, y - 7, 8, 8)}'
                     f'<text x="{x + 11:.2f}" y="{y:.2f}">{escape(name)}</text></g>')
        x += 6.0 * len(name) + 18
    return parts


def _rule(x: float, label_y: float, label: str, title: str) -> str:
    """A vertical rule across the plot, its label above it (flipped left near the right edge)."""
    anchor, label_x = ("end", x - 2) if x > RIGHT - 60 else ("start", x + 2)
    return (f'<g class="rule"><title>{escape(title)}</title>'
            f'<line x1="{x:.2f}" y1="{label_y + 2:.2f}" x2="{x:.2f}" y2="{BASE}"/>'
            f'<text x="{label_x:.2f}" y="{label_y:.2f}" text-anchor="{anchor}">{escape(label)}</text></g>')


def _rect(kind: str, x: float, y: float, width: float, height: float) -> str:
    return f'<rect class="{kind}" x="{x:.2f}" y="{y:.2f}" width="{width:.2f}" height="{height:.2f}"/>'


def _log_axis(low: float, high: float):
    span = math.log(high / low) or 1.0
    return lambda seconds: LEFT + PLOT * math.log(seconds / low) / span


def _log_ticks(low: float, high: float) -> list[float]:
    """Round latencies within the range: 1, 2 and 5 of each power of ten, or the powers alone when many."""
    powers = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [m * 10.0 ** p for p in powers for m in (1, 2, 5) if low <= m * 10.0 ** p <= high]
    return [t for t in ticks if len(ticks) <= 8 or f"{t:.0e}".startswith("1")]


def _ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"{seconds * 1000:.3g} ms"


def _token(text: str) -> str:
    """A class name's safe part."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
