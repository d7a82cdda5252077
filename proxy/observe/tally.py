"""The counts every request and every comparison updates, kept in plain Python and turned into Prometheus
families when scraped: prometheus-client's own Counter and Histogram take a lock per update and walk
the buckets in Python, which cost more than routing a request. Under `--workers` each worker saves
its tally to the shared metrics folder every second and the supervisor adds them up (`TallyFiles`).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from pathlib import Path
from typing import Any, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
# Answered requests held before they are added in: adding in that many pauses the loop for 0.1 to 0.15 ms
# (1,024 took 0.4 to 0.6 ms, for no less CPU a request); a scrape or a save adds in whatever is held first.
SETTLE_AT = 256
TALLIED = ("answered", "latency", "compared", "shadow_latency")  # Tally's dicts: a count, or bins, by labels


class Tally(Collector):
    """What every request and every comparison updates, counted here and exported when scraped:
    requests answered (strangler_requests_total, by route, upstream, method class and status class)
    and their latency (strangler_request_duration_seconds, by route and upstream); parallel-run
    comparisons (strangler_comparisons_total, by route and result) and the shadow exchanges'
    time (strangler_shadow_duration_seconds, by route)."""

    def __init__(self) -> None:
        self.answered: dict[tuple[str, str, bool, int], int] = {}  # (route, upstream, safe, status // 100)
        self.latency: dict[tuple[str, str], list[float]] = {}  # (route, upstream) -> per-bucket counts, sum
        self.compared: dict[tuple[str, str], int] = {}  # (route, matched | diverged)
        self.shadow_latency: dict[tuple[str], list[float]] = {}  # (route,) -> per-bucket counts, sum
        self._held: list[tuple[str, str, str, int, float]] = []  # answered, not yet added in

    def observe(self, route: str, upstream: str, method: str, status: int, seconds: float) -> None:
        """One answered request: held, and added in with the others held (`_settle`)."""
        held = self._held
        held.append((route, upstream, method, status, seconds))
        if len(held) >= SETTLE_AT:
            self._settle()

    def _settle(self) -> None:
        """Add in the requests held, in one loop: that costs less CPU a request than adding each in as it
        is answered, as the code and the counts are fetched from memory once for the lot rather than once
        a request (docs/performance.md). Only the loop's thread observes, scrapes and saves."""
        held, self._held = self._held, []
        answered, latency = self.answered, self.latency
        for route, upstream, method, status, seconds in held:
            key = (route, upstream, method in SAFE_METHODS, status // 100)
            answered[key] = answered.get(key, 0) + 1
            _binned(latency, (route, upstream), seconds)

    def prime(self, route: str, upstreams: list[str]) -> None:
        """A route's answers from each of its upstreams, 2xx and 5xx for either method class, at zero: what
        an error-rate alert divides."""
        for upstream in upstreams:
            for safe in (True, False):
                for status_class in (2, 5):
                    self.answered.setdefault((route, upstream, safe, status_class), 0)

    def prime_comparisons(self, route: str) -> None:
        for result in ("matched", "diverged"):
            self.compared.setdefault((route, result), 0)

    def comparison(self, route: str, result: str) -> None:
        key = (route, result)
        self.compared[key] = self.compared.get(key, 0) + 1

    def shadow(self, route: str, seconds: float) -> None:
        """One shadow exchange, and how long it took."""
        _binned(self.shadow_latency, (route,), seconds)

    def collect(self) -> Iterator[Metric]:
        self._settle()
        return _families({kind: getattr(self, kind).items() for kind in TALLIED})

    def save(self, folder: str, name: str) -> None:
        """The tally as a file of the shared metrics folder (replaced whole, never half-written)."""
        self._settle()
        path = Path(folder, f"tally-{name}.json")
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({kind: [[*key, value] for key, value in getattr(self, kind).items()]
                                         for kind in TALLIED}))
        temporary.replace(path)


class TallyFiles(Collector):
    """The tallies the workers saved in the metrics folder, added up (those of workers that died too:
    their requests were answered)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        added: dict[str, dict[tuple, Any]] = {name: {} for name in TALLIED}
        for path in Path(self.folder).glob("tally-*.json"):
            saved = json.loads(path.read_text())
            for name, total in added.items():
                for *key, value in saved.get(name, ()):
                    before = total.get(tuple(key))
                    total[tuple(key)] = value if before is None else _added(before, value)
        return _families({name: total.items() for name, total in added.items()})


def _binned(bins_by_key: dict[Any, list[float]], key: Any, seconds: float) -> None:
    """One observation into a histogram's buckets (counts, then the sum), by its labels."""
    bins = bins_by_key.get(key)
    if bins is None:
        bins = bins_by_key[key] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
    bins[bisect_left(LATENCY_BUCKETS, seconds)] += 1
    bins[-1] += seconds


def _added(before: Any, value: Any) -> Any:
    """Two workers' counts (numbers) or histogram bins (lists), added."""
    return [a + b for a, b in zip(before, value, strict=True)] if isinstance(value, list) else before + value


def _families(tallied: Mapping[str, Any]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "strangler_requests", "Client requests answered, by route, upstream, method class and status class.",
        labels=["route", "upstream", "method_class", "status_class"])
    for (route, upstream, safe, status_class), n in tallied["answered"]:
        requests.add_metric([route, upstream, "safe" if safe else "unsafe", f"{status_class}xx"], n)
    yield requests
    yield _histogram("strangler_request_duration_seconds", "Time from request to the end of the response, by "
                     "route and the upstream that answered.", ["route", "upstream"], tallied["latency"])
    comparisons = CounterMetricFamily(
        "strangler_comparisons", "Parallel-run comparisons, by route and result (matched, diverged).",
        labels=["route", "result"])
    for labels, n in tallied["compared"]:
        comparisons.add_metric(list(labels), n)
    yield comparisons
    yield _histogram("strangler_shadow_duration_seconds", "Time of the shadow exchange, by route.", ["route"],
                     tallied["shadow_latency"])


def _histogram(name: str, documentation: str, labels: list[str], binned: Any) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, bins in binned:
        cumulative, buckets = 0, []
        for bound, n in zip((*map(_bound, LATENCY_BUCKETS), "+Inf"), bins[:-1], strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        family.add_metric(list(values), buckets, sum_value=bins[-1])
    return family


def _bound(seconds: float) -> str:
    return floatToGoString(seconds)
