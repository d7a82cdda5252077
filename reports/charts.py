"""The console's finer charts as plain values for the template to draw as inline SVG (no script, no CDN):
a route's open divergence rate per minute over the last hour and per hour over 14 days, with the
rollout plan's moves marked where they happened; a sparkline per signature; a row per endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from reports.endpoints import EndpointSummary
from reports.series import FORTNIGHT, LAST_HOUR, Point, SignatureTrend, Span, Step

WIDTH, HEIGHT, LEFT, TOP = 432.0, 84.0, 44.0, 8.0  # the plot area of a 480 x 128 chart, as the 24-hour one
SCALE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class Column:
    x: float
    y: float
    width: float
    height: float
    title: str
    kind: str  # "" open divergences, "ok" none open, "none" nothing compared


@dataclass(frozen=True)
class Mark:
    """A plan's move, where it happened on the chart."""

    x: float
    title: str


@dataclass(frozen=True)
class Zoom:
    title: str  # "last hour, per minute"
    columns: list[Column]
    top: str
    ticks: list[tuple[float, str]]
    marks: list[Mark]
    summary: str


@dataclass(frozen=True)
class EndpointRow:
    endpoint: str
    compared: int
    open: int
    accepted: int
    rate: str
    signatures: list[str]


def zooms(points: dict[str, list[Point]], steps: dict[str, list[Step]]) -> list[Zoom]:
    """The last hour per minute and 14 days per hour, from series.route_trend and series.rollout_steps."""
    shapes = (("last hour, per minute", LAST_HOUR, 15, "min"), ("last 14 days, per hour", FORTNIGHT, 48, "d"))
    return [zoom(title, span, points[title], steps[title], every, unit) for title, span, every, unit in shapes]


def zoom(title: str, span: Span, points: list[Point], steps: list[Step], every: int, unit: str) -> Zoom:
    rates = [p.open / p.compared if p.compared else 0.0 for p in points]
    top = next(step for step in SCALE if step >= max(rates, default=0.0))
    slot = WIDTH / max(len(points), 1)
    columns, ticks = [], []
    for n, (point, rate) in enumerate(zip(points, rates, strict=True)):
        height = max(HEIGHT * rate / top, 1.0)
        x = LEFT + n * slot
        kind = "none" if not point.compared else "ok" if not point.open else ""
        columns.append(Column(round(x, 2), round(TOP + HEIGHT - height, 2), round(max(slot - 0.5, 0.5), 2),
                              round(height, 2), _title(point, span), kind))
        if n % every == 0:
            ago = (len(points) - n) * span.width // (60 if unit == "min" else 86400)
            ticks.append((round(x, 2), f"{ago} {unit} ago"))
    start = points[0].at if points else 0
    marks = [Mark(round(LEFT + (step.at - start) / span.width * slot, 2),
                  f"{_when(step.at)}: {step.action} {step.from_percent}% → {step.to_percent}%, {step.reason}")
             for step in steps]
    opened = sum(p.open for p in points)
    compared = sum(p.compared for p in points)
    summary = f"{opened} of {compared} comparisons open" if compared else "no comparisons"
    return Zoom(title, columns, f"{top:.0%}", ticks, marks, summary)


@dataclass(frozen=True)
class Pair:
    """One latency bin of the two sides' histogram, in SVG units: legacy's bar, then new's beside it."""

    x: float
    legacy_y: float
    new_y: float
    width: float
    title: str


def histogram(axis: list[tuple[float, int, int]]) -> list[Pair]:
    """The two sides' latency histograms on one axis (each side's share of its answers per bin), from
    RouteSides.axis: (bin's upper bound, legacy answers, new answers)."""
    if not axis:
        return []
    totals = (sum(n for _, n, _ in axis) or 1, sum(n for _, _, n in axis) or 1)
    tallest = max(max(a / totals[0], b / totals[1]) for _, a, b in axis) or 1
    slot = WIDTH / len(axis)
    pairs = []
    for n, (bound, legacy, new) in enumerate(axis):
        heights = (HEIGHT * legacy / totals[0] / tallest, HEIGHT * new / totals[1] / tallest)
        pairs.append(Pair(round(LEFT + n * slot, 2), round(TOP + HEIGHT - heights[0], 2),
                          round(TOP + HEIGHT - heights[1], 2), round(max(slot / 2 - 0.5, 0.5), 2),
                          f"up to {bound * 1000:.2f} ms: legacy {legacy}, new {new}"))
    return pairs


def sparkline(trend: SignatureTrend | None, width: float = 96.0, height: float = 16.0) -> str:
    """SVG polyline points of a signature's counts per hour over 14 days ("" when it has none)."""
    if trend is None or not any(trend.counts):
        return ""
    most, step = max(trend.counts), width / max(len(trend.counts) - 1, 1)
    return " ".join(f"{n * step:.1f},{height - count / most * (height - 1):.1f}" for n, count in enumerate(trend.counts))


def endpoint_rows(found: list[EndpointSummary]) -> list[EndpointRow]:
    rows = []
    for e in found:
        t = e.tally
        shown = f"{t.open / t.compared:.1%}" if t.compared else "–"
        rows.append(EndpointRow(e.endpoint, t.compared, t.open, t.accepted, shown,
                                [s for s, _ in e.signatures[:3]]))
    return rows


def _title(point: Point, span: Span) -> str:
    when = _when(point.at)
    if not point.compared:
        return f"{when}: no comparisons"
    return f"{when}: {point.open} of {point.compared} open ({point.diverged - point.open} more accepted)"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
