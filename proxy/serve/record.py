"""What a request leaves behind once it is done: its counts, its side's evidence, its span's end and its
access line. The client's own failures (gone, too slow) are counted as the client's."""

from __future__ import annotations

import logging
import time
from typing import Any

from proxy.model import ClientFailure, FailureKind, Side
from proxy.observe.logs import REQUEST_ID, AccessLog
from proxy.observe.metrics import Metrics
from proxy.observe.tracing import CURRENT, Span, Tracer
from proxy.rollout.evidence import Evidence
from proxy.serve.attempt import Outcome
from proxy.wire.answers import ClientTooSlow
from proxy.wire.request import EdgeRequest
from proxy.wire.tunnel import Tunnel

# Failures that are the client's, as strangler_client_errors_total counts them.
CLIENT_FAILURES = {FailureKind.CLIENT_BODY_TIMEOUT: ClientFailure.BODY_TIMEOUT}
# Failures that say nothing about the side: the proxy's own shedding, the client's slowness.
NOT_THE_SIDES = frozenset({FailureKind.BUSY, FailureKind.OVERLOADED, *CLIENT_FAILURES})


class Recorder:
    """Counts, evidence, spans and access lines for the edge's requests."""

    def __init__(self, metrics: Metrics, evidence: Evidence, tracer: Tracer) -> None:
        self.metrics, self.evidence, self.tracer = metrics, evidence, tracer
        self.tracing = tracer.recording  # read once: most proxies do not trace
        self.access = AccessLog()

    def answered(self, request: EdgeRequest, outcome: Outcome, started: float) -> None:
        """A request answered (or refused): its counts, its side's evidence, its span's end, its access line."""
        status = outcome.response.status
        elapsed = time.monotonic() - started - outcome.waited  # the client's own slowness left out
        route = outcome.route.name if outcome.route is not None else ""
        failure = outcome.failure
        clients = failure is not None and failure.kind in CLIENT_FAILURES
        self.metrics.tally.observe(route, "" if clients else outcome.upstream, request.method, status, elapsed)
        if clients:
            self.metrics.client_errors.labels(CLIENT_FAILURES[failure.kind]).inc()
        elif failure is not None:
            self.metrics.upstream_errors.labels(outcome.upstream, failure.kind).inc()
        if outcome.route is not None and outcome.route.new is not None and outcome.side is not None:
            self._evidence(outcome, route, status, elapsed)
        if self.tracing:
            _finished(CURRENT.get(), outcome, route, status)
        level = logging.INFO if failure is None else logging.WARNING
        if not self.access.enabled(level):
            return  # the access line is off: do not build it
        fields = _fields(request, status, started, route=route, upstream=outcome.upstream,
                         request_id=REQUEST_ID.get(), bytes_in=_received(request),
                         bytes_out=outcome.response.written)
        if outcome.trace is not None:
            fields["trace_id"] = outcome.trace
        if outcome.side is not None:
            fields["side"] = outcome.side
        if outcome.toggle is not None:
            fields["toggle"] = outcome.toggle
        if outcome.shadow is not None:
            fields["shadow"] = outcome.shadow
        if outcome.fell_back:
            fields["fell_back"] = outcome.fell_back
        if outcome.sent is not None:  # a rewrite: the path the upstream read, beside the client's
            fields["upstream_path"] = outcome.sent.partition("?")[0]
        if outcome.tunnel is not None:
            self.access.write(level, "tunnel closed", {**fields, **_tunnel_fields(outcome.tunnel)})
            return
        if failure is None:
            self.access.write(level, "request", fields)
            return
        fields.update(failure=failure.kind, detail=failure.detail)
        self.access.write(logging.INFO if clients else level, "client too slow" if clients else "upstream failed",
                          fields)

    def client_failed(self, request: EdgeRequest, exc: BaseException, started: float, rid: str) -> None:
        """The client went away, or stopped reading its answer: its doing, counted as its own. (A tunnel
        cut by the proxy's shutdown ends here too.)"""
        tunnel = request.protocol.tunnel
        if tunnel is not None and tunnel.ended.done():
            fields = _fields(request, 101, started, request_id=rid)
            self.access.write(logging.INFO, "tunnel closed", {**fields, **_tunnel_fields(tunnel)})
            return
        kind = ClientFailure.SEND_TIMEOUT if isinstance(exc, ClientTooSlow) else ClientFailure.GONE
        self.metrics.client_errors.labels(kind).inc()
        message = "client stopped reading" if kind is ClientFailure.SEND_TIMEOUT else "client went away"
        self.access.write(logging.INFO, message, _fields(request, 499, started, request_id=rid))

    def _evidence(self, outcome: Outcome, route: str, status: int, elapsed: float) -> None:
        """The answer of a route with a new side, for its plan's gates and the console's sides: a fallback is
        the new side failing, then legacy answering."""
        kind = outcome.failure.kind if outcome.failure is not None else None
        if kind in NOT_THE_SIDES:
            return
        if outcome.fell_back:
            self.evidence.answered(route, Side.NEW, None, outcome.fell_back, elapsed)
            self.evidence.answered(route, Side.LEGACY, status, None, elapsed)
        else:
            assert outcome.side is not None
            self.evidence.answered(route, outcome.side, status, kind, elapsed)


def _finished(span: Span, outcome: Outcome, route: str, status: int) -> None:
    """The edge span's last attributes, and its end."""
    span.set({"http.route": route, "http.response.status_code": status, "strangler.upstream": outcome.upstream,
              **({"strangler.side": outcome.side} if outcome.side is not None else {})})
    if status >= 500:
        span.fail(outcome.failure.detail if outcome.failure is not None else f"status {status}")
    span.end()


def _received(request: EdgeRequest) -> int:
    """The request body's bytes read from the client so far (Envoy's BYTES_RECEIVED)."""
    return getattr(request.content, "total_bytes", 0)


def _tunnel_fields(tunnel: Tunnel) -> dict[str, Any]:
    """What an access line says of a tunnel: why it ended, bytes each way, how long it lived."""
    return {"tunnel": tunnel.ended.result(), "sent": tunnel.sent, "received": tunnel.received,
            "seconds": round(tunnel.loop.time() - tunnel.started, 3)}


def _fields(request: EdgeRequest, status: int, started: float, **more: Any) -> dict:
    return {"method": request.method, "path": request.raw_path.partition("?")[0], "status": status,
            "ms": round((time.monotonic() - started) * 1000, 2), "client": request.remote, **more}
