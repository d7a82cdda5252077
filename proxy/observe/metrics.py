"""The proxy's Prometheus metrics, in a registry of their own so several proxies can share a process.

The ones that every request and every comparison update (requests answered and their latency,
comparisons and the shadow exchanges' time) are tallied apart (proxy/observe/tally.py); under
`--workers` the supervisor adds the workers' tallies beside prometheus-client's own
multiprocess files for everything else.
"""

from __future__ import annotations

import platform
import time
from typing import Any, Mapping

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, PlatformCollector, ProcessCollector,
                               disable_created_metrics, generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from proxy.model import BreakerState, Config, FailureKind, SkipReason, StoreState
from proxy.observe.tally import Tally

disable_created_metrics()  # the *_created series double the output and help no dashboard

CONTENT_TYPE = CONTENT_TYPE_LATEST
BREAKER_STATES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
STORE_STATES = {StoreState.CONNECTED: 0, StoreState.CONNECTING: 1, StoreState.LAGGING: 2, StoreState.DOWN: 3}
UPSTREAM_FAILURES = tuple(kind for kind in FailureKind if kind is not FailureKind.CLIENT_BODY_TIMEOUT)
PLAN_MOVES = ("advance", "rollback")
STORE_PROBLEMS = ("queue_full", "store_down", "write_failed")  # the kinds reports/store.py reports


def process_collectors(registry: CollectorRegistry) -> None:
    """prometheus-client's process_*, python_* and python_gc_* series for this process."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class Metrics:
    """Every metric the proxy exports; `render()` is the /metrics body."""

    def __init__(self, version: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        # a gauge rather than an Info: Info does not work across worker processes
        Gauge("strangler_build_info", "Version of this proxy.", ["version", "python"], registry=r,
              multiprocess_mode="max").labels(version, platform.python_version()).set(1)
        self.tally = Tally()
        r.register(self.tally)
        self.rejected = Counter(
            "strangler_rejected_requests", "Requests refused before routing (bad target, version...).",
            ["reason"], registry=r)
        self.upstream_errors = Counter(
            "strangler_upstream_errors", "Upstream exchanges that failed, by kind.",
            ["upstream", "kind"], registry=r)
        self.client_errors = Counter(
            "strangler_client_errors", "Requests that failed on the client's side, by kind: body_timeout (its "
            "body stopped arriving), send_timeout (it stopped reading its answer), gone (it hung up first).",
            ["kind"], registry=r)
        self.in_flight = Gauge(
            "strangler_upstream_in_flight", "Requests in flight to each upstream.", ["upstream"], registry=r,
            multiprocess_mode="livesum")
        self.worker_requests = Counter(
            "strangler_worker_requests", "Requests each worker process has answered (with --workers).",
            ["worker"], registry=r)
        self.toggle_verdicts = Counter(
            "strangler_toggle_verdicts", "Toggle evaluations by verdict: on, off, and the ones that fell back "
            "to legacy for want of an answer (unknown, not_synced, error).",
            ["route", "toggle", "verdict"], registry=r)
        self.shadows_skipped = Counter(
            "strangler_shadows_skipped", "Eligible requests not compared, by reason: busy (too many in flight), "
            "request_too_large, body_too_large, compare_busy, client_gone, fallback, breaker_open, internal_error.",
            ["route", "reason"], registry=r)
        self.divergences = Counter(
            "strangler_divergences", "Parallel-run divergences, by route and whether their signature is accepted "
            "(true: an intended difference, left out of the open divergence rate the gates read).",
            ["route", "accepted"], registry=r)
        self.report_problems = Counter(
            "strangler_report_problems", "Divergence store trouble, by kind: queue_full and store_down (evidence "
            "dropped: the bounded buffer was full, with the store up or down), write_failed (a write that will be "
            "tried again).",
            ["kind"], registry=r)
        self.tunnels_open = Gauge(
            "strangler_tunnels_open", "WebSocket tunnels open, by route.", ["route"], registry=r,
            multiprocess_mode="livesum")
        self.tunnels = Counter(
            "strangler_tunnels", "WebSocket tunnels that ended, by route and why: client_closed, upstream_closed, "
            "idle (silent for server.tunnel_idle_timeout), shutdown.", ["route", "outcome"], registry=r)
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

        self.tls_expiry = Gauge(
            "strangler_tls_certificate_expiry_seconds", "Seconds until the certificate a listener serves expires "
            "(negative once it has), by listener (edge, admin).", ["listener"], registry=r,
            multiprocess_mode="livemin")

        self.rollout_percent = Gauge(
            "strangler_rollout_percent", "Percent of users a rollout plan sends to the new side, by route.",
            ["route"], registry=r, multiprocess_mode="livemax")
        self.rollout_moves = Counter(
            "strangler_rollout_moves", "Rollout plan moves, by route and action (advance, rollback).",
            ["route", "action"], registry=r)
        self.store_state = Gauge(
            "strangler_store_state", "The divergence store, by engine: 0 connected, 1 connecting, 2 lagging, 3 down "
            "(with --workers, the worst of the workers').", ["engine"], registry=r, multiprocess_mode="livemax")
        self.store_waiting = Gauge(
            "strangler_store_waiting", "Evidence items queued or waiting for the divergence store, by engine.",
            ["engine"], registry=r, multiprocess_mode="livesum")

    def prime(self, config: Config) -> None:
        """Every series an alert or a dashboard watches, at zero from the start (and for what a reload adds):
        a series that does not exist yet is no zero to an alert, it is nothing (Prometheus's advice is to
        initialise the label sets known in advance)."""
        for kind in STORE_PROBLEMS:
            self.report_problems.labels(kind)
        for name in config.upstreams:
            self.breaker_state.labels(name)
            for kind in UPSTREAM_FAILURES:
                self.upstream_errors.labels(name, kind)
        for route in config.routes:
            self.tally.prime(route.name, [side.name for side in (route.legacy, route.new) if side is not None])
            if route.new is not None and route.parallel_run.enabled:
                self.tally.prime_comparisons(route.name)
                for accepted in ("true", "false"):
                    self.divergences.labels(route.name, accepted)
                for reason in SkipReason:
                    self.shadows_skipped.labels(route.name, reason)
            if route.rollout_plan is not None:
                self.rollout_percent.labels(route.name)
                for action in PLAN_MOVES:
                    self.rollout_moves.labels(route.name, action)

    def refresh(self, pools: Mapping[str, Any], shadow_pools: Mapping[str, Any]) -> None:
        """Gauges read off the pools (at scrape time, or every second in a worker process)."""
        for name, pool in pools.items():
            self.in_flight.labels(name).set(pool.in_flight)
        for name, pool in shadow_pools.items():
            self.shadow_in_flight.labels(name).set(pool.in_flight)

    def store(self, engine: str, state: StoreState, waiting: int) -> None:
        self.store_state.labels(engine).set(STORE_STATES[state])
        self.store_waiting.labels(engine).set(waiting)

    def certificates(self, served: Mapping[str, Any]) -> None:
        """The expiry gauge, from the certificate (a proxy.model.Certificate) each TLS listener serves."""
        now = time.time()
        for listener, certificate in served.items():
            self.tls_expiry.labels(listener).set(certificate.not_after - now)

    def breaker_changed(self, upstream: str, state: BreakerState) -> None:
        self.breaker_state.labels(upstream).set(BREAKER_STATES[state])
        self.breaker_changes.labels(upstream, state).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
