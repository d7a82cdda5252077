"""Time series for the report's charts, as plain values: a route's trend (compared, diverged, open), the
rollout steps within it, and each signature's counts for a sparkline.

Buckets are aligned to whole minutes or hours (UTC), oldest first; the newest holds `now`, so
it is still filling. Counts come from the store's per-minute tables (counts, signature_minutes),
kept for `retention_days` like everything else: an hourly trend of 14 days needs the default
retention, and shows zeros where a shorter one has pruned. A count stamped after `now` (a
fleet's host whose clock runs ahead) lands in the newest bucket rather than being lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Collection, Iterable

from proxy.model.evidence import Tally
from reports.db import Db
from reports.query import Place, acceptances, opened


@dataclass(frozen=True, slots=True)
class Span:
    """`buckets` periods of `width` seconds, ending with the one that holds the moment asked about."""

    width: int
    buckets: int

    def start(self, now: float) -> int:
        """The first bucket's start."""
        return (int(now // self.width) - self.buckets + 1) * self.width

    def starts(self, now: float) -> list[int]:
        first = self.start(now)
        return [first + i * self.width for i in range(self.buckets)]

    def index(self, at: float, now: float) -> int | None:
        """The bucket `at` falls in (None: before the span)."""
        index = int((at - self.start(now)) // self.width)
        return None if index < 0 else min(index, self.buckets - 1)


LAST_HOUR = Span(60, 60)  # per minute
FORTNIGHT = Span(3600, 14 * 24)  # per hour


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket of a route's trend; `open` leaves out the signatures accepted now, as the gates do."""

    at: int  # the bucket's start, seconds since the epoch
    compared: int
    diverged: int
    open: int


@dataclass(frozen=True, slots=True)
class Step:
    """A move of the route's rollout plan (start, advance, rollback, hold, resume) within the span."""

    at: float
    action: str
    from_percent: int
    to_percent: int
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class SignatureTrend:
    """One signature: when it was first and last seen (ever, not only within the span), and its
    divergences per bucket of the span."""

    signature: str
    first_seen: float
    last_seen: float
    counts: tuple[int, ...]


def route_trend(databases: Iterable[Place], route: str, span: Span, now: float | None = None,
                accepted: Collection[str] | None = None) -> list[Point]:
    """The route's comparisons, divergences and open divergences per bucket; `accepted`: the signatures
    accepted now (default: read from the stores)."""
    databases, now = list(databases), time.time() if now is None else now
    accepted = frozenset(acceptances(databases, now)) if accepted is None else frozenset(accepted)
    compared, diverged, excused = ([0] * span.buckets for _ in range(3))
    first_minute = span.start(now) // 60
    for db in opened(databases):
        for minute, n, d in db.execute("SELECT minute, compared, diverged FROM counts WHERE route = ? AND minute >= ?",
                                       [route, first_minute]):
            index = span.index(minute * 60, now)
            if index is not None:
                compared[index] += n
                diverged[index] += d
        for minute, signature, count in _signature_minutes(db, route, first_minute):
            index = span.index(minute * 60, now)
            if index is not None and signature in accepted:
                excused[index] += count
    # Signature counts and per-minute counts are written in one batch, but a pruned or merged store may
    # hold a few more of the first: never more accepted than diverged.
    return [Point(at, c, d, Tally(c, d, min(a, d)).open)
            for at, c, d, a in zip(span.starts(now), compared, diverged, excused, strict=True)]


def rollout_steps(databases: Iterable[Place], route: str, span: Span, now: float | None = None) -> list[Step]:
    """The plan's moves within the span, oldest first (none for a route without a plan)."""
    now = time.time() if now is None else now
    found: list[Step] = []
    for db in opened(databases):
        if not db.exists("rollout_events"):
            continue
        found += [Step(e["at"], e["action"], e["from_percent"], e["to_percent"], e["reason"] or "", e["by"] or "")
                  for e in db.query("SELECT at, action, from_percent, to_percent, reason, by FROM rollout_events "
                                    "WHERE route = ? AND at >= ? ORDER BY at, id", [route, span.start(now)])]
    return sorted(found, key=lambda step: step.at)


def signature_trends(databases: Iterable[Place], route: str, span: Span,
                     now: float | None = None) -> dict[str, SignatureTrend]:
    """Each signature of the route the stores know, with its counts per bucket of the span."""
    databases, now = list(databases), time.time() if now is None else now
    seen: dict[str, tuple[float, float]] = {}
    counts: dict[str, list[int]] = {}
    first_minute = span.start(now) // 60
    for db in opened(databases):
        for signature, first, last in db.execute(
                "SELECT signature, first_seen, last_seen FROM signatures WHERE route = ?", [route]):
            have = seen.get(signature, (first, last))
            seen[signature] = (min(have[0], first), max(have[1], last))
        for minute, signature, count in _signature_minutes(db, route, first_minute):
            index = span.index(minute * 60, now)
            if index is not None:
                counts.setdefault(signature, [0] * span.buckets)[index] += count
    return {signature: SignatureTrend(signature, first, last, tuple(counts.get(signature, [0] * span.buckets)))
            for signature, (first, last) in sorted(seen.items())}


def _signature_minutes(db: Db, route: str, first_minute: int) -> list[tuple[int, str, int]]:
    if not db.exists("signature_minutes"):
        return []  # a store from before schema 3
    return db.execute("SELECT minute, signature, count FROM signature_minutes WHERE route = ? AND minute >= ?",
                      [route, first_minute]).fetchall()
