"""The proxy's Prometheus metrics, in a registry of their own so several proxies can share a process."""

from __future__ import annotations

import platform
from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # the *_created series double the output and help no dashboard

CONTENT_TYPE = CONTENT_TYPE_LATEST
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric the proxy exports; `render()` is the /metrics body."""

    def __init__(self, version: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, bool, int], tuple[Any, Any]] = {}
        # a gauge rather than an Info: Info does not work across worker processes
        Gauge("strangler_build_info", "Version of this proxy.", ["version", "python"], registry=r,
              multiprocess_mode="max").labels(version, platform.python_version()).set(1)
        self.requests = Counter(
            "strangler_requests", "Client requests answered, by route, upstream, method class and status class.",
            ["route", "upstream", "method_class", "status_class"], registry=r)
        self.latency = Histogram(
            "strangler_request_duration_seconds", "Time from request to the end of the response, by route and "
            "the upstream that answered.", ["route", "upstream"], buckets=LATENCY_BUCKETS, registry=r)
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

    def observe(self, route: str, upstream: str, method: str, status: int, seconds: float) -> None:
        """One answered request. The labelled children are kept: labels() costs more than inc()."""
        key = (route, upstream, method in SAFE_METHODS, status // 100)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, upstream, "safe" if key[2] else "unsafe", f"{key[3]}xx"),
                self.latency.labels(route, upstream))
        children[0].inc()
        children[1].observe(seconds)

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
