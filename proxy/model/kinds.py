"""The kinds the proxy tells apart: sides, serve modes, toggle verdicts, failures, skipped shadows, states.

Enums rather than strings; each is a StrEnum, so it reads as its value in JSON, logs and metric labels.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Which side of the migration answers: the monolith or the extracted service."""

    LEGACY = "legacy"
    NEW = "new"


class Serve(StrEnum):
    """A route's `serve:` value."""

    LEGACY = "legacy"
    NEW = "new"
    TOGGLE = "toggle"


class Verdict(StrEnum):
    """What a toggle said for one request. Anything but ON means the monolith answers."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"  # the provider has no such feature
    NOT_SYNCED = "not_synced"  # no feature state yet (server never reached, no cached state)
    ERROR = "error"  # evaluating raised


class FailureKind(StrEnum):
    """Why an upstream gave no (whole) answer, or why none was asked for."""

    REFUSED = "refused"  # the connection was refused: nothing was sent
    TIMEOUT = "timeout"  # no connection, or no whole answer, in time
    BUSY = "busy"  # every pooled connection stayed busy: the proxy's own limit, not the upstream's fault
    BROKEN = "broken"  # the connection broke, or the answer was not valid HTTP
    STATUS = "status"  # a 5xx held back for a retry or a fallback
    BREAKER_OPEN = "breaker_open"  # not tried: its circuit breaker is open
    OVERLOADED = "overloaded"  # not tried: too many requests wait for it already
    CLIENT_BODY_TIMEOUT = "client_body_timeout"  # the client's body stopped arriving: the client's, not the side's


class ClientFailure(StrEnum):
    """How a request failed on the client's side (strangler_client_errors_total): never an upstream's."""

    BODY_TIMEOUT = "body_timeout"  # its body stopped arriving
    SEND_TIMEOUT = "send_timeout"  # it stopped reading its answer
    GONE = "gone"  # it hung up first


class SkipReason(StrEnum):
    """Why an eligible request was not compared in a parallel run (strangler_shadows_skipped_total)."""

    BUSY = "busy"  # too many shadows of the route in flight
    REQUEST_TOO_LARGE = "request_too_large"  # its body is over parallel_run.max_body
    BODY_TOO_LARGE = "body_too_large"  # an answer's body is over parallel_run.max_body
    COMPARE_BUSY = "compare_busy"  # the comparison process has enough waiting
    CLIENT_GONE = "client_gone"  # the served side has no answer: the client left
    FALLBACK = "fallback"  # legacy answered for a failing new side: not the side decided on
    BREAKER_OPEN = "breaker_open"  # the shadow's upstream has its breaker open
    UPGRADE = "upgrade"  # a WebSocket tunnel: never shadowed
    INTERNAL_ERROR = "internal_error"  # a bug of ours, logged


class BreakerState(StrEnum):
    """An upstream's circuit breaker."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class Phase(StrEnum):
    """Where a proxy process is in its life."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class StickinessKind(StrEnum):
    """What keeps a user on one side of a toggle."""

    HEADER = "header"  # a request header's value
    COOKIE = "cookie"  # a cookie's value
    IP = "ip"  # the client's address as the proxy sees it
    RANDOM = "random"  # nothing: each request on its own


class Provider(StrEnum):
    """Where toggles are evaluated from."""

    LOCAL = "local"  # routes.yaml's rollouts, no server
    UNLEASH = "unleash"  # a real Unleash server


class TunnelEnd(StrEnum):
    """Why a WebSocket tunnel ended."""

    CLIENT_CLOSED = "client_closed"
    UPSTREAM_CLOSED = "upstream_closed"
    IDLE = "idle"  # silent for server.tunnel_idle_timeout
    SHUTDOWN = "shutdown"  # the proxy drained and the tunnel was still open


class StoreState(StrEnum):
    """How the divergence store is keeping up, as /status shows it."""

    CONNECTING = "connecting"  # not reached yet since start-up
    CONNECTED = "connected"
    LAGGING = "lagging"  # reachable, but evidence waits longer than it should
    DOWN = "down"  # the last write failed; evidence waits, bounded
