"""A route's configuration: which requests it takes, which upstreams serve them, and how they are compared.

Frozen dataclasses, parsed once from routes.yaml (proxy.config) and never changed after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from proxy.model.endpoints import EndpointTemplate
from proxy.model.hosts import host_covers, host_matches
from proxy.model.kinds import Serve, Side, StickinessKind
from proxy.model.tls import UpstreamTls


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    """When an upstream's circuit breaker opens, and for how long."""

    failures: int = 5  # consecutive failures (refused, timed out, broken, 5xx) that open it
    open_seconds: float = 30.0  # how long it stays open before letting probes through
    probes: int = 1  # requests let through while half-open


@dataclass(frozen=True, slots=True)
class Upstream:
    """A server the proxy forwards to, with its own connection pool (a bulkhead)."""

    name: str
    url: str  # scheme://host:port, no path
    connect_timeout: float = 1.0
    timeout: float = 30.0
    max_connections: int = 100
    max_pending: int = 100  # requests waiting for a connection; beyond: 503 at once
    retry_budget: float = 0.2  # retries at most this share of the last 10 s of requests (3 always)
    breaker: BreakerSpec = BreakerSpec()
    tls: UpstreamTls | None = None  # https:// only; None: the system's trust, no client certificate


@dataclass(frozen=True, slots=True)
class Stickiness:
    """What keeps a user on one side: a header, a cookie, the client address, or nothing."""

    kind: StickinessKind
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", StickinessKind(self.kind))  # "header" as written reads as HEADER

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else str(self.kind)


@dataclass(frozen=True, slots=True)
class ToggleSpec:
    """A route's feature toggle: the Unleash feature name and, for the local provider, its rollout."""

    name: str
    rollout: int | None  # percent for the local provider; None when not written (0)
    stickiness: Stickiness

    @property
    def local_rollout(self) -> int:
        return self.rollout or 0


@dataclass(frozen=True, slots=True)
class ParallelRun:
    """Whether (and for which requests) the other side also gets the request, for comparison."""

    enabled: bool = False
    sample: float = 1.0
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    timeout: float = 5.0  # seconds for the whole shadow exchange
    max_in_flight: int = 100  # shadows of this route at once; more are skipped, not queued
    max_body: int = 1 << 20  # bytes of each body kept for comparison; larger: not compared


@dataclass(frozen=True, slots=True)
class CompareSpec:
    """What a comparison of the two answers looks at and what it ignores."""

    ignore_paths: tuple[str, ...] = ()
    ignore_order: bool = False
    float_tolerance: float = 0.0
    headers: tuple[str, ...] = ()
    noise_probe: float = 0.0  # share of compared requests also sent twice to legacy, to learn noise


@dataclass(frozen=True, slots=True)
class Gates:
    """What the evidence gathered at a rollout step must show. None: that gate is not checked."""

    min_comparisons: int = 0  # advance: at least this many; rollback: judge only after this many
    min_seconds: float = 0.0  # advance only after this long at the step
    max_divergence_rate: float | None = None  # diverged / compared, accepted signatures left out
    max_error_rate: float | None = None  # the new side's 5xx, timeouts and refusals / its answers
    max_latency_ratio: float | None = None  # the new side's p99 / legacy's p99


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """A route's way from shadow only to all users on the new side, a step at a time, on evidence."""

    steps: tuple[int, ...] = (0, 1, 5, 25, 50, 100)  # percent of users the new side serves; 0: shadow only
    advance: Gates = Gates(min_comparisons=100, min_seconds=300.0, max_divergence_rate=0.01,
                           max_error_rate=0.01, max_latency_ratio=1.5)
    rollback: Gates = Gates(min_comparisons=20, max_divergence_rate=0.05, max_error_rate=0.05,
                            max_latency_ratio=3.0)
    rollback_to: str = "previous"  # previous (one step down) | legacy (0 percent)
    window: float = 60.0  # seconds: rollback gates judge the step's most recent evidence
    check_interval: float = 5.0  # seconds between judgements

    def below(self, percent: int) -> int:
        """The step under `percent`, for a rollback of one step (0 when there is none)."""
        lower = [step for step in self.steps if step < percent]
        return lower[-1] if lower else 0

    def above(self, percent: int) -> int | None:
        """The next step up, or None at the last one."""
        return next((step for step in self.steps if step > percent), None)


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a route takes: a segment prefix of the path, methods, exact header values, and
    the host (proxy.model.hosts)."""

    path: str
    methods: frozenset[str] | None = None
    headers: tuple[tuple[str, str], ...] = ()  # names lower-cased
    host: str | None = None  # "shop.example.com" or "*.example.com", lower case; None: any host

    def matches(self, method: str, path: str, headers: Mapping[str, str], host: str | None = None) -> bool:
        """`host`: the request's, as proxy.model.hosts.request_host gives it (needed only by a host rule)."""
        return self.matches_but_host(method, path, headers) and (self.host is None or host_matches(self.host, host))

    def matches_but_host(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        """Path, methods and header values: what routing tries first, so that it reads the Host only for a
        host route that takes the request otherwise."""
        if not is_segment_prefix(self.path, path):
            return False
        if self.methods is not None and method not in self.methods:
            return False
        for name, value in self.headers:  # a plain loop: this runs for every route tried
            if headers.get(name) != value:
                return False
        return True

    def covers(self, other: Match) -> bool:
        """True when every request `other` matches is also matched by this one."""
        if not is_segment_prefix(self.path, other.path) or not host_covers(self.host, other.host):
            return False
        if self.methods is not None and (other.methods is None or not other.methods <= self.methods):
            return False
        return set(self.headers) <= set(other.headers)


def is_segment_prefix(prefix: str, path: str) -> bool:
    """`/api/orders` is a prefix of `/api/orders` and `/api/orders/7`, not of `/api/ordersX`."""
    if prefix == "/" or path == prefix:
        return True
    return path.startswith(prefix) and path[len(prefix)] == "/"


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What one side is sent instead of the prefix the route matched (`/api/orders` -> `/orders`), and
    what its absolute Locations start with, to be mapped back (proxy.routing.rewrite)."""

    matched: str  # the route's match.path
    sent: str  # the prefix this side gets instead
    origins: tuple[str, ...] = ()  # the side's upstream as its own absolute URLs name it: "http://127.0.0.1:9002"


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of routes.yaml: which requests, which two sides, and who answers."""

    name: str
    match: Match
    legacy: Upstream
    new: Upstream | None = None
    serve: Serve = Serve.LEGACY
    toggle: ToggleSpec | None = None
    fallback: Side | None = None
    parallel_run: ParallelRun = ParallelRun()
    compare: CompareSpec = CompareSpec()
    retries: int = 0  # more attempts, for idempotent methods, on connect errors and 502/503/504
    rollout_plan: RolloutPlan | None = None
    websocket: bool = True  # an upgrade to WebSocket is tunnelled; false: answered 400
    legacy_rewrite: Rewrite | None = None  # None: legacy gets the path as the client sent it
    new_rewrite: Rewrite | None = None
    timeout: float | None = None  # seconds for each exchange, over the upstream's own `timeout`
    endpoints: tuple[EndpointTemplate, ...] = ()  # templates the report groups requests by, before the default rule
    line: int = 0

    def upstream(self, side: Side) -> Upstream | None:
        return self.legacy if side is Side.LEGACY else self.new

    def rewrite(self, side: Side) -> Rewrite | None:
        return self.legacy_rewrite if side is Side.LEGACY else self.new_rewrite

    @property
    def ceiling(self) -> int:
        """The most users routes.yaml lets the toggle move: its `rollout`; with a plan and none
        written, all of them (the plan's step decides below that)."""
        assert self.toggle is not None
        if self.toggle.rollout is None and self.rollout_plan is not None:
            return 100
        return self.toggle.local_rollout
