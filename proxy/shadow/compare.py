"""Comparing a parallel run's two answers, and recording what was found: counts, divergences, evidence.

Identical answers match at once (the common case, when the new service is right); small
ones are compared here, on the loop; large ones in the comparison process
(proxy.shadow.process), as long as few wait there, else the comparison is skipped and
counted. Differences at paths learned as noise are reported with a divergence but do not
make one.
"""

from __future__ import annotations

import hashlib
from typing import Awaitable, Callable, Collection, Protocol

from comparators.base import Comparator
from proxy.model import (CompareSpec, Comparison, Difference, Divergence, Observation, RequestRecord, Route, Side,
                         SkipReason)
from proxy.model.endpoints import OTHER, EndpointTemplate, endpoint
from proxy.model.jsonpath import covers, generalize
from proxy.observe.metrics import Metrics
from proxy.rollout.evidence import Evidence
from reports.base import DivergenceSink

CompareCall = Callable[[Observation, Observation, CompareSpec], Awaitable[Comparison]]
# Comparing two answers this small takes tens of microseconds, handing them to the comparison
# process hundreds (pickling, pipes, its threads): they are compared here, large ones there.
INLINE_BYTES = 16 << 10
# Comparisons waiting for the comparison process. A few keep it busy; more would only hold their
# bodies in memory and make each wait longer, for no more comparisons per second
# (docs/performance.md has the measurement).
COMPARE_QUEUE = 4
MATCHED = Comparison(())
ENDPOINTS_PER_ROUTE = 200
ENDPOINT_PATHS = 4096  # paths whose endpoint is remembered (per process; past it, all are forgotten at once)


class Compared(Protocol):
    """The request whose answers are compared: its time and target count every comparison, and its whole
    record (headers, body) is made only for a divergence."""

    at: float

    @property
    def target(self) -> str: ...

    def record(self) -> RequestRecord: ...


class Comparer:
    """Compares two observations of one request and records the result; learns noise from legacy twice."""

    def __init__(self, comparator: Comparator, compare_away: CompareCall, sink: DivergenceSink, metrics: Metrics,
                 evidence: Evidence, max_pending: int = COMPARE_QUEUE) -> None:
        self.comparator, self.compare_away = comparator, compare_away
        self.sink, self.metrics, self.evidence = sink, metrics, evidence  # evidence: for routes with a plan
        self.max_pending = max_pending
        self.pending = 0  # comparisons handed to the comparison process and not yet back
        self.noise: dict[str, set[str]] = {}  # route -> paths learned as noise
        self.accepted: frozenset[str] = frozenset()  # signatures accepted in the store (refreshed by the proxy)
        self.endpoints: dict[str, set[str]] = {}  # route -> endpoint templates counted so far
        # (route, path) -> the route's templates and the path's endpoint under them
        self._templated: dict[tuple[str, str], tuple[tuple[EndpointTemplate, ...], str]] = {}

    async def compare(self, route: Route, served: Side, request: Compared, legacy: Observation,
                      new: Observation) -> SkipReason | None:
        """Compare and record; the reason when no comparison could be made."""
        spec = route.compare
        comparison = MATCHED if _identical(legacy, new, spec) else await self._compared(legacy, new, spec)
        if isinstance(comparison, SkipReason):
            return comparison
        noise, real = _noise_and_real(comparison.differences, self.noise.get(route.name, ())) \
            if comparison.differences else ((), ())
        self.metrics.tally.comparison(route.name, "diverged" if real else "matched")
        found = signature(route.name, real) if real else ""
        self.sink.count(route.name, bool(real), request.at, self._endpoint(route, request.target), found)
        if route.rollout_plan is not None:
            self.evidence.compared(route.name, found)
        if real:
            self.metrics.divergences.labels(route.name, "true" if found in self.accepted else "false").inc()
            self.sink.record(Divergence(route.name, request.record(), served, legacy, new, real, noise, found))
        return None

    def _endpoint(self, route: Route, target: str) -> str:
        """The request's endpoint template; past ENDPOINTS_PER_ROUTE of them in this process, OTHER (a route
        whose paths hold free text would otherwise grow the store without bound). Remembered by path, as a
        route's requests mostly repeat a few paths, and a path's answer never changes once given; a reload
        gives the route new templates (a new tuple), which the path's endpoint is then worked out under."""
        key = (route.name, target.partition("?")[0])
        known = self._templated.get(key)
        if known is not None and known[0] is route.endpoints:
            return known[1]
        if len(self._templated) >= ENDPOINT_PATHS:
            self._templated.clear()
        found, seen = endpoint(key[1], route.endpoints), self.endpoints.setdefault(route.name, set())
        if found not in seen and len(seen) >= ENDPOINTS_PER_ROUTE:
            found = OTHER
        else:
            seen.add(found)
        self._templated[key] = (route.endpoints, found)
        return found

    async def learn_noise(self, route: Route, legacy: Observation, again: Observation, at: float) -> None:
        """What differs between two answers of legacy to one request changes on its own: noise."""
        spec = CompareSpec()
        comparison = MATCHED if _identical(legacy, again, spec) else await self._compared(legacy, again, spec)
        if isinstance(comparison, SkipReason) or comparison.matched:
            return
        paths = sorted({generalize(d.path) for d in comparison.differences})
        self.noise.setdefault(route.name, set()).update(paths)
        self.sink.learn_noise(route.name, paths, at)

    async def _compared(self, legacy: Observation, new: Observation, spec: CompareSpec) -> Comparison | SkipReason:
        """Answers that are not identical, compared (here when small, else in the comparison process)."""
        if len(legacy.body or b"") + len(new.body or b"") <= INLINE_BYTES:
            return self.comparator.compare(legacy, new, spec)
        if self.pending >= self.max_pending:
            return SkipReason.COMPARE_BUSY
        self.pending += 1
        try:
            return await self.compare_away(legacy, new, spec)
        finally:
            self.pending -= 1


def _identical(legacy: Observation, new: Observation, spec: CompareSpec) -> bool:
    """The same status, bytes and compared header lines: nothing to compare. Lines that differ only in
    order are left to the comparator to judge."""
    if legacy.error or new.error or legacy.status != new.status or legacy.body != new.body:
        return False
    if legacy.headers == new.headers:  # every line alike (as when both sides run one server): so are these
        return True
    names = ("content-encoding", *spec.headers)
    return _lines(legacy, names) == _lines(new, names)


def _lines(observation: Observation, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The observation's header lines of these (lower-case) names, in order. (A loop: a comprehension
    with the lowered name bound in it took twice as long.)"""
    lines = []
    for name, value in observation.headers:
        if name.lower() in names:
            lines.append((name.lower(), value))
    return lines


def signature(route: str, differences: tuple[Difference, ...]) -> str:
    """What groups divergences: the route and the set of paths that differ (any list index alike)."""
    paths = sorted({generalize(d.path) for d in differences})
    return hashlib.sha256("\n".join([route, *paths]).encode()).hexdigest()[:12]


def _noise_and_real(differences: tuple[Difference, ...],
                    known: Collection[str]) -> tuple[tuple[Difference, ...], tuple[Difference, ...]]:
    """The differences at paths learned as noise, and the rest."""
    noise = tuple(d for d in differences if any(covers(n, d.path) for n in known))
    return noise, tuple(d for d in differences if d not in noise)
