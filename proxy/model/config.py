"""A whole routes.yaml as a value: listeners, upstreams, routes, and the proxy's own settings.

Frozen dataclasses, parsed once (proxy.config); request code never sees raw YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from proxy.model.kinds import Provider
from proxy.model.route import Route, Upstream
from proxy.model.tls import ListenerTls


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
class ServerSpec:
    """The edge listener's limits."""

    max_in_flight: int = 1000  # requests at once; beyond: 503 at once
    header_timeout: float = 10.0  # seconds to receive a request's headers
    body_timeout: float = 30.0  # seconds a request body may go without a byte
    keepalive_timeout: float = 75.0  # seconds an idle keep-alive connection is kept
    max_header_bytes: int = 32 << 10  # a request's line and headers together; beyond: 431
    request_buffer: int = 1 << 20  # a request body up to this size is read whole before an upstream is called
    send_timeout: float = 60.0  # seconds a client may take no byte of its answer
    tunnel_idle_timeout: float = 3600.0  # seconds a WebSocket tunnel may stay silent


@dataclass(frozen=True, slots=True)
class AdminSpec:
    listen: Address = Address("127.0.0.1", 9901)
    token_env: str | None = None  # a variable that must hold the admin bearer token (set and not empty)
    tls: ListenerTls | None = None  # admin over https
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
    provider: Provider = Provider.LOCAL
    unleash: UnleashSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider", Provider(self.provider))  # "unleash" as written reads as UNLEASH


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class ReportsSpec:
    database: str = "var/divergence.db"  # a SQLite file (resolved against the config file's folder) or a URL
    examples_per_signature: int = 5  # divergences kept whole per signature; the rest are counted
    retention_days: float = 14.0
    max_body: int = 64 << 10  # bytes of each body stored, after redaction
    password_env: str | None = None  # the variable holding a PostgreSQL password (never the password)
    line: int = 0  # where password_env is written, for the start-up check


@dataclass(frozen=True, slots=True)
class TracingSpec:
    """`tracing:`, spans exported as OTLP over HTTP (off when absent)."""

    endpoint: str  # the collector's traces URL, e.g. http://127.0.0.1:4318/v1/traces
    sample: float = 1.0  # the share of traces the edge starts that are recorded (a client's choice is followed)
    service_name: str = "strangler"


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
    tls: ListenerTls | None = None  # the edge over https
    tracing: TracingSpec | None = None  # spans exported; None: only trace context passes through

    def ignored_paths(self) -> dict[str, tuple[str, ...]]:
        """Each route's `compare.ignore_paths`: what the report marks as ignored in the bodies it shows."""
        return {route.name: route.compare.ignore_paths for route in self.routes}
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
