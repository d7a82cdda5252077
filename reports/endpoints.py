"""Per endpoint of each route: comparisons, divergences and their signatures, counted as the gates count
them (proxy.model.evidence), from the store's endpoint_comparisons (hourly, so a time range reads
whole hours)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from proxy.model.evidence import Tally, rate, tally
from reports.query import Place, acceptances, opened


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    """One endpoint template of one route; `signatures` are (signature, divergences), most first."""

    route: str
    endpoint: str
    tally: Tally
    signatures: tuple[tuple[str, int], ...]
    accepted: frozenset[str]  # those of `signatures` accepted now

    @property
    def divergence_rate(self) -> float:
        return round(rate(self.tally.diverged, self.tally.compared), 4)

    @property
    def open_rate(self) -> float:
        return round(self.tally.open_rate, 4)

    def as_json(self) -> dict[str, Any]:
        t = self.tally
        return {"route": self.route, "endpoint": self.endpoint, "compared": t.compared, "diverged": t.diverged,
                "accepted": t.accepted, "open": t.open, "divergence_rate": self.divergence_rate,
                "open_rate": self.open_rate,
                "signatures": [{"signature": s, "count": n, "accepted": s in self.accepted}
                               for s, n in self.signatures]}


def by_endpoint(databases: Iterable[Place], route: str | None = None, now: float | None = None,
                since: float | None = None, until: float | None = None) -> list[EndpointSummary]:
    """Every endpoint seen, by route name, the highest open rate first within a route."""
    databases = list(databases)
    low, high = int((since or 0) // 3600), int((until or 4e10) // 3600)
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for db in opened(databases):
        if not db.exists("endpoint_comparisons"):
            continue  # a store from before endpoints were counted
        for name, endpoint, signature, count in db.execute(
                "SELECT route, endpoint, signature, CAST(SUM(count) AS BIGINT) FROM endpoint_comparisons "
                "WHERE hour >= ? AND hour <= ? GROUP BY route, endpoint, signature", [low, high]):
            if route is None or name == route:
                counts[(name, endpoint)][signature] += count
    accepted = frozenset(acceptances(databases, time.time() if now is None else now))
    found = [_summary(name, endpoint, found, accepted) for (name, endpoint), found in counts.items()]
    return sorted(found, key=lambda e: (e.route, -e.open_rate, -e.tally.compared, e.endpoint))


def _summary(route: str, endpoint: str, counts: Counter[str], accepted: frozenset[str]) -> EndpointSummary:
    signatures = sorted(((s, n) for s, n in counts.items() if s), key=lambda item: (-item[1], item[0]))
    return EndpointSummary(route, endpoint, tally(counts.items(), accepted), tuple(signatures),
                           frozenset(s for s, _ in signatures if s in accepted))
