"""The values everything else passes around: configuration parsed once, and routing decisions.

All immutable; request code never sees raw YAML. Configuration is frozen dataclasses.
What is made anew for every request (its facts, the toggle's answer, the decision, a
parallel run's request and both answers) is a NamedTuple, as aiohttp's own parsed
messages are: just as immutable, and a fraction of the cost to build, which on the hot
path is most of the point. Standard library only (layer 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping, NamedTuple


class Side(StrEnum):
    """Which side of the migration answers: the monolith or the extracted service."""

    LEGACY = "legacy"
    NEW = "new"


class Serve(StrEnum):
    """A route's `serve:` value."""

    LEGACY = "legacy"
    NEW = "new"
    TOGGLE = "toggle"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in routes.yaml, located by file and line."""

    file: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        kind = "warning: " if self.warning else ""
        where = f"{self.file}:{self.line}" if self.line else self.file  # line 0: the file as a whole
        return f"{where}: {kind}{self.message}"


@dataclass(frozen=True, slots=True)
class Address:
    """A host and port to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


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


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """The edge listener's limits."""

    max_in_flight: int = 1000  # requests at once; beyond: 503 at once
    header_timeout: float = 10.0  # seconds to receive a request's headers
    body_timeout: float = 30.0  # seconds a request body may go without a byte
    keepalive_timeout: float = 75.0  # seconds an idle keep-alive connection is kept
    max_header_bytes: int = 32 << 10  # a request's line and headers together; beyond: 431
    request_buffer: int = 1 << 20  # a request body up to this size is read whole before an upstream is called
    send_timeout: float = 60.0  # seconds a client may take no byte of its answer


@dataclass(frozen=True, slots=True)
class Stickiness:
    """What keeps a user on one side: a header, a cookie, the client address, or nothing."""

    kind: str  # header | cookie | ip | random
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


@dataclass(frozen=True, slots=True)
class ToggleSpec:
    """A route's feature toggle: the Unleash feature name and, for the local provider, its rollout."""

    name: str
    rollout: int | None  # percent for the local provider; None when not written (0)
    stickiness: Stickiness

    @property
    def local_rollout(self) -> int:
        return self.rollout or 0


class Verdict(StrEnum):
    """What a toggle said for one request. Anything but ON means the monolith answers."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"  # the provider has no such feature
    NOT_SYNCED = "not_synced"  # no feature state yet (server never reached, no cached state)
    ERROR = "error"  # evaluating raised


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
    """Which requests a route takes: a segment prefix of the path, methods, exact header values."""

    path: str
    methods: frozenset[str] | None = None
    headers: tuple[tuple[str, str], ...] = ()  # names lower-cased

    def matches(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
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
        if not is_segment_prefix(self.path, other.path):
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
    line: int = 0

    def upstream(self, side: Side) -> Upstream | None:
        return self.legacy if side is Side.LEGACY else self.new

    @property
    def ceiling(self) -> int:
        """The most users routes.yaml lets the toggle move: its `rollout`; with a plan and none
        written, all of them (the plan's step decides below that)."""
        assert self.toggle is not None
        if self.toggle.rollout is None and self.rollout_plan is not None:
            return 100
        return self.toggle.local_rollout


@dataclass(frozen=True, slots=True)
class AdminSpec:
    listen: Address = Address("127.0.0.1", 9901)
    token_env: str | None = None  # a variable that must hold the admin bearer token (set and not empty)
    line: int = field(default=0, compare=False)  # where token_env is written


@dataclass(frozen=True, slots=True)
class UnleashSpec:
    url: str
    app_name: str = "strangler"
    environment: str = "development"
    token_env: str | None = None
    refresh_interval: int = 15  # seconds
    cache_directory: str = ""  # where the SDK keeps its last known state (config: var/unleash-cache)
    admin_token_env: str | None = None  # an admin API token's variable: rollout plans write their step
    project: str = "default"  # the Unleash project of the toggles a rollout plan writes

    @property
    def admin_url(self) -> str:
        """The Admin API next to the client API (`.../api` -> `.../api/admin`)."""
        return self.url.rstrip("/") + "/admin"


@dataclass(frozen=True, slots=True)
class TogglesSpec:
    provider: str = "local"  # local | unleash
    unleash: UnleashSpec | None = None


@dataclass(frozen=True, slots=True)
class ReportsSpec:
    database: str = "var/divergence.db"  # resolved against the config file's folder
    examples_per_signature: int = 5  # divergences kept whole per signature; the rest are counted
    retention_days: float = 14.0
    max_body: int = 64 << 10  # bytes of each body stored, after redaction


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated routes.yaml."""

    source: str
    digest: str  # sha256 of the file's bytes
    listen: Address
    admin: AdminSpec
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]
    toggles: TogglesSpec = TogglesSpec()
    reports: ReportsSpec = ReportsSpec()
    server: ServerSpec = ServerSpec()
    warnings: tuple[Problem, ...] = field(default=(), compare=False)


class RequestFacts(NamedTuple):
    """What routing and toggles may look at in a request."""

    method: str
    path: str  # the routed form (see proxy.target)
    headers: Mapping[str, str]
    remote: str | None  # the client's address as the proxy sees it, never a forwarded header


class ToggleCheck(NamedTuple):
    """A toggle asked for one request: its verdict, and the sticky value it hashed (if any)."""

    name: str
    verdict: Verdict
    sticky: str | None
    plan: int | None = None  # the rollout plan's percent, when it kept an ON verdict's user on legacy


class Decision(NamedTuple):
    """Who answers one request, who else sees it, and why."""

    route: Route
    side: Side
    upstream: Upstream
    shadow: Upstream | None
    toggle: ToggleCheck | None = None

    @property
    def reason(self) -> str:
        if self.toggle is None:
            return f"serve: {self.route.serve}"
        check, spec = self.toggle, self.route.toggle
        assert spec is not None
        if check.sticky is None and spec.stickiness.kind != "random":
            return (f"toggle {check.name} is {check.verdict} (the request has no {spec.stickiness}, "
                    f"so it cannot stick to one side)")
        about = f" for {spec.stickiness}={check.sticky!r}" if check.sticky is not None else ""
        if check.plan is not None:
            return f"toggle {check.name} is on{about}, but its rollout plan is at {check.plan}% of users, not this one"
        return f"toggle {check.name} is {check.verdict}{about}"


class Observation(NamedTuple):
    """What one side answered to one request, or why it did not."""

    side: Side
    status: int | None  # None: no answer (see error)
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # None: not kept (over the cap) or no answer
    seconds: float = 0.0
    error: str | None = None  # refused | timeout | busy | broken

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True)
class Difference:
    """One place where the two answers differ: `status`, `header:NAME`, `$` or `$.a.b[0].c`."""

    path: str
    legacy: Any
    new: Any
    kind: str = "changed"  # changed | added | removed | type


@dataclass(frozen=True, slots=True)
class Comparison:
    """The differences between the legacy and the new answer (legacy first, whoever served)."""

    differences: tuple[Difference, ...]
    body: str = "none"  # how the bodies were compared: json | text | digest | none

    @property
    def matched(self) -> bool:
        return not self.differences


class RequestRecord(NamedTuple):
    """The request of a parallel run, as the report shows it."""

    request_id: str
    method: str
    target: str  # path and query as sent
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    at: float


@dataclass(frozen=True, slots=True)
class Divergence:
    """A compared request whose answers differ: what was asked, both answers, and how they differ."""

    route: str
    request: RequestRecord
    served: Side
    legacy: Observation
    new: Observation
    differences: tuple[Difference, ...]
    noise: tuple[Difference, ...] = ()  # differences at paths learned as noise: reported, not counted
    signature: str = ""
