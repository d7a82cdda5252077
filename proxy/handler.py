"""The edge: each client request is checked, routed, forwarded, measured and logged here."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11

from proxy.forward import forward
from proxy.headers import request_id, upstream_headers
from proxy.live import LiveConfig
from proxy.logs import REQUEST_ID
from proxy.metrics import Metrics
from proxy.model import Decision, RequestFacts
from proxy.responses import error_response
from proxy.routing import decide, match_route
from proxy.target import Refusal, parse_target
from proxy.toggling import VerdictLog
from proxy.upstream import Failure

log = logging.getLogger("strangler.access")


@dataclass(frozen=True, slots=True)
class Served:
    """What became of one request, for the access log and the metrics."""

    response: web.StreamResponse
    route: str = ""
    upstream: str = ""
    failure: Failure | None = None


class EdgeHandler:
    """The request handler of the edge listener (an aiohttp low-level server handler)."""

    def __init__(self, live: LiveConfig, metrics: Metrics) -> None:
        self.live = live
        self.metrics = metrics
        self.verdicts = VerdictLog()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = request_id(request.headers)
        REQUEST_ID.set(rid)  # this handler runs in a task of its own: no reset needed
        started = time.monotonic()
        try:
            served = await self._serve(request, rid)
        except asyncio.CancelledError:
            log.info("client went away", extra=_fields(request, 499, started))
            raise
        self._record(request, served, started)
        return served.response

    async def _serve(self, request: web.BaseRequest, rid: str) -> Served:
        refusal = _refusal(request)
        target = parse_target(request.raw_path) if refusal is None else refusal
        if isinstance(target, Refusal):
            self.metrics.rejected.labels("bad_request").inc()
            refused = error_response(400, "bad_request", target.detail, rid)
            refused.force_close()  # what follows on this connection cannot be trusted either
            return Served(refused)
        generation = self.live.current
        route = match_route(generation.config.routes, request.method, target.path, request.headers)
        if route is None:
            return Served(error_response(404, "no_route", f"no route matches {request.method} {target.path}", rid))
        facts = RequestFacts(request.method, target.path, request.headers, request.remote)
        decision = decide(route, facts, generation.toggles)
        if decision.toggle is not None:
            self._count_verdict(decision)
        pool = generation.pools[decision.upstream.name]
        headers = upstream_headers(request.headers, peer=request.remote, proto=request.scheme, rid=rid)
        outcome = await forward(request, pool, target.raw, headers, rid)
        return Served(outcome.response, route.name, decision.upstream.name, outcome.failure)

    def _count_verdict(self, decision: Decision) -> None:
        check = decision.toggle
        assert check is not None
        self.metrics.toggle_verdicts.labels(decision.route.name, check.name, check.verdict).inc()
        self.verdicts.note(decision.route.name, check.name, check.verdict)

    def _record(self, request: web.BaseRequest, served: Served, started: float) -> None:
        status = served.response.status
        elapsed = time.monotonic() - started
        self.metrics.observe(served.route, served.upstream, request.method, status, elapsed)
        fields = _fields(request, status, started, route=served.route, upstream=served.upstream)
        if served.failure is None:
            log.info("request", extra=fields)
            return
        self.metrics.upstream_errors.labels(served.upstream, served.failure.kind).inc()
        fields.update(failure=served.failure.kind, detail=served.failure.detail)
        log.warning("upstream failed", extra=fields)


def _refusal(request: web.BaseRequest) -> Refusal | None:
    """Request-level checks aiohttp's parser leaves to us (reliability.md HTTP-18)."""
    if request.version not in (HttpVersion10, HttpVersion11):
        return Refusal(f"HTTP/{request.version.major}.{request.version.minor} is not supported")
    if request.version == HttpVersion10 and "Transfer-Encoding" in request.headers:
        return Refusal("Transfer-Encoding is not allowed in an HTTP/1.0 request")
    if request.version == HttpVersion11 and "Host" not in request.headers:
        return Refusal("an HTTP/1.1 request needs a Host header")
    return None


def _fields(request: web.BaseRequest, status: int, started: float, **more: str) -> dict:
    return {"method": request.method, "path": request.raw_path.partition("?")[0], "status": status,
            "ms": round((time.monotonic() - started) * 1000, 2), "client": request.remote, **more}
