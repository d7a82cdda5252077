"""What /status says, and where the process is in its life (starting, ready, draining)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Mapping

from proxy.model import BreakerState, Certificate, Config, Phase, Upstream, UpstreamTls
from proxy.observe.buildinfo import BuildInfo
from proxy.serve.live import LiveConfig


class Lifecycle:
    """Where the process is in its life: starting, ready, or draining before exit."""

    def __init__(self) -> None:
        self.state = Phase.STARTING

    @property
    def ready(self) -> bool:
        return self.state is Phase.READY


def status(live: LiveConfig, lifecycle: Lifecycle, build: BuildInfo, breakers: dict[str, str]) -> dict[str, Any]:
    generation = live.current
    config = generation.config
    failure = live.last_failure
    return {
        "version": build.version, "git_commit": build.git_commit, "python": build.python,
        "host": build.host, "pid": build.pid, "started_at": _iso(build.started_at),
        "state": lifecycle.state,
        "config": {
            "path": live.path, "sha256": config.digest, "loaded_at": _iso(generation.loaded_at),
            "routes": [route.name for route in config.routes],
            "warnings": [str(w) for w in config.warnings],
            "last_reload_error": None if failure is None else {
                "at": _iso(failure.at), "problems": [str(p) for p in failure.problems]},
        },
        "toggles": _toggles(generation.toggles.status(), config),
        "upstreams": {name: {"url": pool.spec.url, "in_flight": pool.in_flight,
                             "max_connections": pool.spec.max_connections, "max_pending": pool.spec.max_pending,
                             "connect_timeout": pool.spec.connect_timeout, "timeout": pool.spec.timeout,
                             "breaker": breakers.get(name, BreakerState.CLOSED), **_upstream_tls(pool.spec)}
                      for name, pool in generation.pools.items()},
    }


def _upstream_tls(upstream: Upstream) -> dict[str, Any]:
    """How an https:// upstream is checked: against which CAs, whether at all, with which client certificate."""
    if not upstream.url.startswith("https://"):
        return {}
    tls = upstream.tls or UpstreamTls()
    return {"tls": {"ca": tls.ca or "system", "verify": tls.verify, "client_cert": tls.client_cert}}


def tls_status(certificates: Mapping[str, Certificate]) -> dict[str, Any]:
    """Each TLS listener's certificate, as new connections get it."""
    now = time.time()
    return {listener: {"subject": c.subject, "issuer": c.issuer, "not_after": _iso(c.not_after),
                       "expires_in_seconds": int(c.not_after - now), "serial": c.serial}
            for listener, c in certificates.items()}


def _toggles(state: dict[str, Any], config: Config) -> dict[str, Any]:
    """The provider's state, and for each toggle route the definition it is evaluated by."""
    definitions = state.pop("definitions", {})
    last_sync = state.get("last_sync")
    return {**state, "last_sync": _iso(last_sync) if last_sync else None, "routes": [
        {"route": route.name, "toggle": route.toggle.name, "serve": str(route.serve),
         "stickiness": str(route.toggle.stickiness), "definition": definitions.get(route.toggle.name)}
        for route in config.routes if route.toggle is not None]}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
