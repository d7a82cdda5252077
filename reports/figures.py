"""The report's charts and endpoint table as plain values, from what the store holds: a route's trend per
minute over the last hour and per hour over 14 days with the rollout plan's moves marked (reports/series.py),
a sparkline per signature, and each side's latency histogram and status mix (reports/sides.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from proxy.model.evidence import LATENCY_FLOOR
from reports.charts import Bucket, Histogram, Mix, Rule, Series, Spark, Trend
from reports.endpoints import EndpointSummary
from reports.series import FORTNIGHT, LAST_HOUR, Point, SignatureTrend, Span, Step
from reports.sides import RouteSides

# (title, span, a tick every so many buckets, the tick's unit in seconds and name)
SHAPES = (("last hour, per minute", LAST_HOUR, 15, 60, "min"), ("last 14 days, per hour", FORTNIGHT, 72, 86400, "d"))


@dataclass(frozen=True)
class EndpointRow:
    endpoint: str
    compared: int
    open: int
    accepted: int
    rate: str
    signatures: list[str]


def trend(title: str, span: Span, points: list[Point], steps: list[Step], every: int, unit: tuple[int, str]) -> Trend:
    """A bar per bucket (compared, open and accepted as the gates count them now), a rule per plan move."""
    buckets = tuple(Bucket(_when(p.at), p.compared, p.open, p.diverged - p.open) for p in points)
    start = points[0].at if points else 0
    rules = tuple(Rule((step.at - start) / span.width, _step_label(step),
                       f"{_when(step.at)}: {step.action} {step.from_percent}% → {step.to_percent}%"
                       + (f", {step.reason}" if step.reason else "") + (f" (by {step.by})" if step.by else ""))
                  for step in steps)
    seconds, name = unit
    ticks = tuple((n, f"{(len(points) - n) * span.width // seconds} {name} ago") for n in range(0, len(points), every))
    return Trend(title, buckets, rules, (*ticks, (len(points), "now")))


def sparkline(found: SignatureTrend | None) -> Spark | None:
    """A signature's divergences per hour over 14 days; None when it has none there."""
    if found is None or not any(found.counts):
        return None
    return Spark("divergences per hour, last 14 days", found.counts)


def latency(both: RouteSides | None) -> Histogram | None:
    """Both sides' latency bins on one axis, the gates' p99 floor marked where the bins reach it."""
    if both is None or not both.axis:
        return None
    bounds, legacy, new = zip(*both.axis, strict=True)
    return Histogram("latency: each side's share of its answers per bin (bins 20% apart)", tuple(bounds),
                     (Series("legacy", tuple(legacy)), Series("new", tuple(new))),
                     ((LATENCY_FLOOR, f"{LATENCY_FLOOR * 1000:g} ms: the gates' p99 floor"),))


def status_mix(both: RouteSides | None) -> Mix | None:
    """Each side's answers by status class (none: no answer at all)."""
    if both is None:
        return None
    return Mix("status classes of each side's answers",
               tuple((str(side.side), tuple((str(c), n) for c, n in side.classes)) for side in (both.legacy, both.new)))


def endpoint_rows(found: list[EndpointSummary]) -> list[EndpointRow]:
    rows = []
    for e in found:
        t = e.tally
        shown = f"{t.open / t.compared:.1%}" if t.compared else "–"
        rows.append(EndpointRow(e.endpoint, t.compared, t.open, t.accepted, shown, [s for s, _ in e.signatures[:3]]))
    return rows


def _step_label(step: Step) -> str:
    if step.from_percent == step.to_percent:
        return f"{step.action} at {step.to_percent}%"
    return f"{step.from_percent}% → {step.to_percent}%"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
