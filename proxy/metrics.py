"""The proxy's Prometheus metrics, in a registry of their own so several proxies can share a process.

The two that every request updates (requests answered, and their latency) are tallied in
plain Python and turned into Prometheus families when scraped (`RequestTally`):
prometheus-client's own Counter and Histogram take a lock per update and walk the buckets
in Python, which cost more than routing a request. Under `--workers` each worker writes
its tally to the shared metrics folder every second and the supervisor adds them up
(`TallyFiles`), beside prometheus-client's own multiprocess files for everything else.
"""

from __future__ import annotations

import json
import platform
from bisect import bisect_left
from pathlib import Path
from typing import Any, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

disable_created_metrics()  # the *_created series double the output and help no dashboard

CONTENT_TYPE = CONTENT_TYPE_LATEST
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)


class Children(dict[tuple[str, ...], Any]):
    """One metric's children by their label values, each made once: `labels()` checks its arguments
    and takes a lock on every call, which costs more than the `inc()` that follows it."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, values: tuple[str, ...]) -> Any:
        child = self[values] = self.metric.labels(*values)
        return child


class Metrics:
    """Every metric the proxy exports; `render()` is the /metrics body."""

    def __init__(self, version: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        # a gauge rather than an Info: Info does not work across worker processes
        Gauge("strangler_build_info", "Version of this proxy.", ["version", "python"], registry=r,
              multiprocess_mode="max").labels(version, platform.python_version()).set(1)
        self.tally = RequestTally()
        r.register(self.tally)
        self.rejected = Counter(
            "strangler_rejected_requests", "Requests refused before routing (bad target, version...).",
            ["reason"], registry=r)
        self.upstream_errors = Counter(
            "strangler_upstream_errors", "Upstream exchanges that failed, by kind.",
            ["upstream", "kind"], registry=r)
        self.in_flight = Gauge(
            "strangler_upstream_in_flight", "Requests in flight to each upstream.", ["upstream"], registry=r,
            multiprocess_mode="livesum")
        self.worker_requests = Gauge(
            "strangler_worker_requests", "Requests each worker process has answered (with --workers).",
            ["worker"], registry=r, multiprocess_mode="livemax")
        self.toggle_verdicts = Counter(
            "strangler_toggle_verdicts", "Toggle evaluations by verdict: on, off, and the ones that fell back "
            "to legacy for want of an answer (unknown, not_synced, error).",
            ["route", "toggle", "verdict"], registry=r)
        self.comparisons = Counter(
            "strangler_comparisons", "Parallel-run comparisons, by route and result (matched, diverged).",
            ["route", "result"], registry=r)
        self.shadows_skipped = Counter(
            "strangler_shadows_skipped", "Eligible requests not compared, by reason: busy (too many in flight), "
            "request_too_large, body_too_large, compare_busy, client_gone, fallback, breaker_open, internal_error.",
            ["route", "reason"], registry=r)
        self.shadow_seconds = Histogram(
            "strangler_shadow_duration_seconds", "Time of the shadow exchange, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.report_problems = Counter(
            "strangler_report_problems", "Divergence store trouble, by kind: queue_full (dropped), write_failed.",
            ["kind"], registry=r)
        self.shadow_in_flight = Gauge(
            "strangler_shadow_in_flight", "Shadow requests in flight to each upstream.", ["upstream"], registry=r,
            multiprocess_mode="livesum")
        self.retries = Counter(
            "strangler_retries", "Attempts sent again, by route, upstream and what failed before "
            "(refused, broken, status, timeout, stale_connection).", ["route", "upstream", "reason"], registry=r)
        self.fallbacks = Counter(
            "strangler_fallbacks", "Requests the new service failed and legacy answered, by route and failure.",
            ["route", "reason"], registry=r)
        self.shed = Counter(
            "strangler_shed_requests", "Requests turned away at once with 503, by where the limit was "
            "(listener, upstream).", ["scope"], registry=r)
        self.breaker_state = Gauge(
            "strangler_breaker_state", "Each upstream's circuit breaker: 0 closed, 1 half-open, 2 open "
            "(with --workers, the most open of the workers').", ["upstream"], registry=r, multiprocess_mode="livemax")
        self.breaker_changes = Counter(
            "strangler_breaker_transitions", "Circuit breaker state changes, by upstream and new state.",
            ["upstream", "state"], registry=r)
        self.reloads = Counter(
            "strangler_config_reloads", "Attempts to load routes.yaml, by result (ok, invalid, unchanged).",
            ["result"], registry=r)
        self.config_loaded_at = Gauge(
            "strangler_config_loaded_timestamp_seconds", "When the configuration in use was loaded.", registry=r,
            multiprocess_mode="livemin")

        self.rollout_percent = Gauge(
            "strangler_rollout_percent", "Percent of users a rollout plan sends to the new side, by route.",
            ["route"], registry=r, multiprocess_mode="livemax")
        self.rollout_moves = Counter(
            "strangler_rollout_moves", "Rollout plan moves, by route and action (advance, rollback).",
            ["route", "action"], registry=r)

    def refresh(self, pools: Mapping[str, Any], shadow_pools: Mapping[str, Any]) -> None:
        """Gauges read off the pools (at scrape time, or every second in a worker process)."""
        for name, pool in pools.items():
            self.in_flight.labels(name).set(pool.in_flight)
        for name, pool in shadow_pools.items():
            self.shadow_in_flight.labels(name).set(pool.in_flight)

    def breaker_changed(self, upstream: str, state: str) -> None:
        self.breaker_state.labels(upstream).set(BREAKER_STATES[state])
        self.breaker_changes.labels(upstream, state).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTally(Collector):
    """Requests answered, by route, upstream, method class and status class, and their latency by
    route and upstream: counted here, exported as strangler_requests_total and
    strangler_request_duration_seconds."""

    def __init__(self) -> None:
        self.answered: dict[tuple[str, str, bool, int], int] = {}  # (route, upstream, safe, status // 100)
        self.latency: dict[tuple[str, str], list[float]] = {}  # (route, upstream) -> per-bucket counts, sum

    def observe(self, route: str, upstream: str, method: str, status: int, seconds: float) -> None:
        """One answered request."""
        key = (route, upstream, method in SAFE_METHODS, status // 100)
        self.answered[key] = self.answered.get(key, 0) + 1
        bins = self.latency.get(key[:2])
        if bins is None:
            bins = self.latency[key[:2]] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        bins[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        bins[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        return _families(self.answered.items(), self.latency.items())

    def save(self, folder: str, name: str) -> None:
        """The tally as a file of the shared metrics folder (replaced whole, never half-written)."""
        path = Path(folder, f"tally-{name}.json")
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"answered": [[*key, n] for key, n in self.answered.items()],
                                         "latency": [[*key, bins] for key, bins in self.latency.items()]}))
        temporary.replace(path)


class TallyFiles(Collector):
    """The tallies the workers saved in the metrics folder, added up (those of workers that died too:
    their requests were answered)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        answered: dict[tuple[str, str, bool, int], int] = {}
        latency: dict[tuple[str, str], list[float]] = {}
        for path in Path(self.folder).glob("tally-*.json"):
            saved = json.loads(path.read_text())
            for route, upstream, safe, status_class, n in saved["answered"]:
                key = (route, upstream, safe, status_class)
                answered[key] = answered.get(key, 0) + n
            for route, upstream, bins in saved["latency"]:
                total = latency.setdefault((route, upstream), [0] * len(bins))
                latency[(route, upstream)] = [a + b for a, b in zip(total, bins, strict=True)]
        return _families(answered.items(), latency.items())


def _families(answered: Any, latency: Any) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "strangler_requests", "Client requests answered, by route, upstream, method class and status class.",
        labels=["route", "upstream", "method_class", "status_class"])
    for (route, upstream, safe, status_class), n in answered:
        requests.add_metric([route, upstream, "safe" if safe else "unsafe", f"{status_class}xx"], n)
    yield requests
    durations = HistogramMetricFamily(
        "strangler_request_duration_seconds", "Time from request to the end of the response, by route and "
        "the upstream that answered.", labels=["route", "upstream"])
    for (route, upstream), bins in latency:
        cumulative, buckets = 0, []
        for bound, n in zip((*map(_bound, LATENCY_BUCKETS), "+Inf"), bins[:-1], strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        durations.add_metric([route, upstream], buckets, sum_value=bins[-1])
    yield durations


def _bound(seconds: float) -> str:
    return floatToGoString(seconds)
