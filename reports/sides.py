"""Each side of a route as the review console shows it: its answers, their status classes, how many
failed, and their latency (p50, p95, p99 and the histogram), from the evidence every process hands
the store each second (gate_answers, gate_bins, side_statuses).

Latencies are read off bins 20% apart (proxy/model/evidence.py): a quantile is its bin's upper bound.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from proxy.model import Side
from proxy.model.evidence import LATENCY_FLOOR, STATUS_CLASSES, EvidenceBatch, StatusClass, bin_bound, quantile
from reports.db import Db
from reports.query import Place, opened

FLOOR_NOTE = f"a p99 under {LATENCY_FLOOR * 1000:g} ms counts as {LATENCY_FLOOR * 1000:g} ms in the ratio, as the gates count it"


def write_statuses(db: Db, batch: EvidenceBatch) -> None:
    """Add one process's period of status classes (inside the writer's batch: no reads)."""
    second = int(batch.at)
    for route, side, answers in batch.answers:
        for status, count in sorted(answers.classes.items()):
            db.execute("INSERT INTO side_statuses (route, second, side, status_class, count) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (route, second, side, status_class) DO UPDATE SET count = side_statuses.count + "
                       "excluded.count", [route, second, str(side), str(status), count])


@dataclass(frozen=True, slots=True)
class SideFigures:
    """One side's answers to one route over a time range."""

    side: Side
    answers: int = 0
    errors: int = 0  # 5xx and no answer, as the gates count failures
    classes: tuple[tuple[StatusClass, int], ...] = tuple((c, 0) for c in STATUS_CLASSES)
    bins: tuple[tuple[int, int], ...] = ()  # (latency bin, answers), ascending; bins without answers left out

    @property
    def error_rate(self) -> float:
        return self.errors / self.answers if self.answers else 0.0

    def quantile(self, q: float) -> float | None:
        """Seconds, or None without answers."""
        return quantile(Counter(dict(self.bins)), q)

    @property
    def p99(self) -> float | None:
        return self.quantile(0.99)

    def as_json(self) -> dict[str, Any]:
        return {"answers": self.answers, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "status_classes": {str(c): n for c, n in self.classes},
                **{f"p{q}_ms": _ms(self.quantile(q / 100)) for q in (50, 95, 99)},
                "histogram": [{"bin": i, "le_ms": _ms(bin_bound(i)), "count": n} for i, n in self.bins]}


@dataclass(frozen=True, slots=True)
class RouteSides:
    """Both sides of a route, and their p99s compared as the gates compare them."""

    route: str
    legacy: SideFigures
    new: SideFigures

    @property
    def latency_ratio(self) -> float | None:
        if self.legacy.p99 is None or self.new.p99 is None:
            return None
        return max(self.new.p99, LATENCY_FLOOR) / max(self.legacy.p99, LATENCY_FLOOR)

    @property
    def floored(self) -> bool:
        """Whether the floor changed the ratio: a p99 under it."""
        return self.latency_ratio is not None and min(self.legacy.p99, self.new.p99) < LATENCY_FLOOR

    @property
    def axis(self) -> list[tuple[float, int, int]]:
        """The two histograms on one axis: (bin's upper bound in seconds, legacy, new), from the first bin
        either side used to the last, empty bins included."""
        legacy, new = dict(self.legacy.bins), dict(self.new.bins)
        used = legacy.keys() | new.keys()
        if not used:
            return []
        return [(bin_bound(i), legacy.get(i, 0), new.get(i, 0)) for i in range(min(used), max(used) + 1)]

    def ratio_text(self) -> str:
        """"p99 new 5.35 ms vs legacy 1.04 ms (x1.0, ...)", saying the floor where it applies."""
        if self.latency_ratio is None:
            return "p99 ratio: needs answers from both sides"
        text = (f"p99 new {_ms(self.new.p99)} ms vs legacy {_ms(self.legacy.p99)} ms "
                f"(x{self.latency_ratio:.1f}")
        return text + (f"; {FLOOR_NOTE})" if self.floored else ")")

    def table(self) -> list[list[str]]:
        """A row a side, as TABLE_HEAD names the columns (for the HTML report)."""
        return [[str(side.side), str(side.answers), f"{side.error_rate:.1%}", *(str(n) for _, n in side.classes),
                 *(_ms_text(side.quantile(q)) for q in (0.5, 0.95, 0.99))] for side in (self.legacy, self.new)]

    def as_json(self) -> dict[str, Any]:
        ratio = self.latency_ratio
        return {"legacy": self.legacy.as_json(), "new": self.new.as_json(),
                "latency_ratio": None if ratio is None else round(ratio, 2),
                "latency_floor_ms": LATENCY_FLOOR * 1000, "floored": self.floored}


def sides(databases: Iterable[Place], route: str | None = None, since: float | None = None,
          until: float | None = None) -> list[RouteSides]:
    """Per route with answers recorded (by name), both sides added up over every store; with `since`
    and `until` (seconds), the seconds after `since` up to `until`, as the gates read a step."""
    window = [int(since or 0), int(until if until is not None else 4e10)]
    answers: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    classes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    bins: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    for db in opened(databases):
        for name, side, count, failed in db.execute(
                "SELECT route, side, CAST(SUM(answers) AS BIGINT), CAST(SUM(errors) AS BIGINT) FROM gate_answers "
                "WHERE second > ? AND second <= ? GROUP BY route, side", window):
            answers[(name, side)] += count
            errors[(name, side)] += failed
        for name, side, index, count in db.execute(
                "SELECT route, side, bin, CAST(SUM(count) AS BIGINT) FROM gate_bins WHERE second > ? AND second <= ? "
                "GROUP BY route, side, bin", window):
            bins[(name, side)][index] += count
        if db.exists("side_statuses"):  # a store not yet written by a proxy that counts them
            for name, side, status, count in db.execute(
                    "SELECT route, side, status_class, CAST(SUM(count) AS BIGINT) FROM side_statuses "
                    "WHERE second > ? AND second <= ? GROUP BY route, side, status_class", window):
                classes[(name, side)][status] += count

    def figures(name: str, side: Side) -> SideFigures:
        key = (name, str(side))
        return SideFigures(side, answers[key], errors[key], tuple((c, classes[key][str(c)]) for c in STATUS_CLASSES),
                           tuple(sorted(bins[key].items())))
    names = sorted({name for name, _ in answers} if route is None else {route} & {name for name, _ in answers})
    return [RouteSides(name, figures(name, Side.LEGACY), figures(name, Side.NEW)) for name in names]


TABLE_HEAD = ("side", "answers", "error rate", *(str(c) for c in STATUS_CLASSES), "p50", "p95", "p99")


def _ms_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
