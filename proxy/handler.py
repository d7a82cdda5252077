"""The edge: each client request is checked, routed, forwarded, measured and logged here."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from multidict import CIMultiDict

from proxy.body import RequestBody, read_up_to, streamed
from proxy.evidence import Evidence
from proxy.experiment import Experiments, Shadow
from proxy.forward import Forwarder, Outcome
from proxy.headers import request_id, upstream_headers
from proxy.live import Generation, LiveConfig
from proxy.logs import REQUEST_ID, AccessLog
from proxy.metrics import Metrics
from proxy.model import Decision, RequestFacts, RequestRecord, Route, Side
from proxy.responses import error_response
from proxy.routing import decide, match_route
from proxy.target import Refusal, Target, parse_target
from proxy.toggling import VerdictLog
from proxy.upstream import Failure

# Failures that say nothing about the side: the proxy's own shedding, the client's slowness.
NOT_THE_SIDES = frozenset({"busy", "overloaded", "client_body_timeout"})


@dataclass(frozen=True, slots=True)
class Served:
    """What became of one request, for the access log and the metrics."""

    response: web.StreamResponse
    route: str = ""
    upstream: str = ""
    failure: Failure | None = None
    fell_back: bool = False
    side: Side | None = None  # the side decided on, for a route with a rollout plan (its evidence)


class EdgeHandler:
    """The request handler of the edge listener (an aiohttp low-level server handler)."""

    def __init__(self, live: LiveConfig, metrics: Metrics, experiments: Experiments, forwarder: Forwarder,
                 evidence: Evidence, cap: Callable[[Route], int | None]) -> None:
        self.live, self.metrics = live, metrics
        self.evidence, self.cap = evidence, cap  # cap: the percent a route's rollout plan stands at
        self.experiments, self.forwarder = experiments, forwarder
        self.verdicts = VerdictLog()
        self.access = AccessLog()
        self.in_flight = 0
        self.answered = 0

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = request_id(request.headers)
        REQUEST_ID.set(rid)  # this handler runs in a task of its own: no reset needed
        started = time.monotonic()
        if self.in_flight >= self.live.current.config.server.max_in_flight:
            self.metrics.shed.labels("listener").inc()  # shed at once: a queue that grows helps nobody
            return error_response(503, "overloaded", "the proxy is at its limit of requests in flight", rid, 1)
        self.in_flight += 1
        try:
            served = await self._serve(request, rid)
        except asyncio.CancelledError:
            self.access.write(logging.INFO, "client went away", _fields(request, 499, started, request_id=rid))
            raise
        finally:
            self.in_flight -= 1
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
        cap = self.cap(route) if route.rollout_plan is not None else None
        decision = decide(route, facts, generation.toggles, cap)
        if decision.toggle is not None:
            self._count_verdict(decision)
        headers = upstream_headers(request.headers, peer=request.remote, proto=request.scheme, rid=rid)
        try:
            outcome = await self._forward(request, decision, facts, generation, target, headers, rid)
        except TimeoutError:  # the body stopped arriving while it was read for a parallel run
            slow = error_response(408, "request_timeout", "the request body stopped arriving", rid)
            return Served(await _send_and_hang_up(request, slow), route.name)
        if outcome.failure is not None and outcome.failure.kind == "client_body_timeout":
            await _send_and_hang_up(request, outcome.response)
        side = decision.side if route.rollout_plan is not None else None
        return Served(outcome.response, route.name, outcome.upstream, outcome.failure, outcome.fell_back, side)

    async def _forward(self, request: web.BaseRequest, decision: Decision, facts: RequestFacts,
                       generation: Generation, target: Target, headers: CIMultiDict[str], rid: str) -> Outcome:
        idle = generation.config.server.body_timeout
        shadow = None
        if decision.shadow is not None and self.experiments.sampled(decision, facts, generation.toggles):
            body, whole = await read_up_to(request, decision.route.parallel_run.max_body, idle)
            if whole:
                shadow = self._shadow(request, decision, target, headers, rid, body, generation)
            else:
                self.experiments.skip(decision.route, "request_too_large")
        else:
            body = await streamed(request, idle)
        try:
            outcome = await self.forwarder.serve(request, decision, generation.pools, target.raw, headers, rid,
                                                 body, shadow and shadow.capture)
        except BaseException:
            if shadow is not None:
                shadow.deliver("client_gone")  # no answer to compare: the client left, or worse
            raise
        if shadow is not None:  # after a fallback the served answer is not the side decided on
            shadow.deliver("fallback" if outcome.fell_back else shadow.capture.observation(decision.side))
        return outcome

    def _shadow(self, request: web.BaseRequest, decision: Decision, target: Target, headers: CIMultiDict[str],
                rid: str, body: RequestBody, generation: Generation) -> Shadow | None:
        record = RequestRecord(rid, request.method, target.raw, tuple(request.headers.items()), body.data,
                               time.time())
        return self.experiments.begin(decision, record, headers, body.data, generation.shadow_pools)

    def _evidence(self, served: Served, status: int, elapsed: float) -> None:
        """A plan route's answer, for its gates: a fallback is the new side failing, then legacy answering."""
        kind = served.failure.kind if served.failure is not None else None
        if kind in NOT_THE_SIDES:
            return
        if served.fell_back:
            self.evidence.answered(served.route, Side.NEW, None, "fallback", elapsed)
            self.evidence.answered(served.route, Side.LEGACY, status, None, elapsed)
        else:
            assert served.side is not None
            self.evidence.answered(served.route, served.side, status, kind, elapsed)

    def _count_verdict(self, decision: Decision) -> None:
        check = decision.toggle
        assert check is not None
        self.metrics.toggle_verdicts.labels(decision.route.name, check.name, check.verdict).inc()
        self.verdicts.note(decision.route.name, check.name, check.verdict)

    def _record(self, request: web.BaseRequest, served: Served, started: float) -> None:
        self.answered += 1
        status = served.response.status
        elapsed = time.monotonic() - started
        self.metrics.tally.observe(served.route, served.upstream, request.method, status, elapsed)
        if served.failure is not None:
            self.metrics.upstream_errors.labels(served.upstream, served.failure.kind).inc()
        if served.side is not None:
            self._evidence(served, status, elapsed)
        level = logging.INFO if served.failure is None else logging.WARNING
        if not self.access.enabled(level):
            return  # the access line is off: do not build it
        fields = _fields(request, status, started, route=served.route, upstream=served.upstream,
                         request_id=REQUEST_ID.get())
        if served.fell_back:
            fields["fell_back"] = True
        if served.failure is None:
            self.access.write(level, "request", fields)
            return
        fields.update(failure=served.failure.kind, detail=served.failure.detail)
        self.access.write(level, "upstream failed", fields)


async def _send_and_hang_up(request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
    """Answer, then close at once: aiohttp would otherwise linger reading the rest of a body that a
    client too slow to send it is not sending."""
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


def _refusal(request: web.BaseRequest) -> Refusal | None:
    """Request-level checks aiohttp's parser leaves to us (reliability.md HTTP-18)."""
    if request.version not in (HttpVersion10, HttpVersion11):
        return Refusal(f"HTTP/{request.version.major}.{request.version.minor} is not supported")
    if request.version == HttpVersion10 and "Transfer-Encoding" in request.headers:
        return Refusal("Transfer-Encoding is not allowed in an HTTP/1.0 request")
    if request.version == HttpVersion11 and "Host" not in request.headers:
        return Refusal("an HTTP/1.1 request needs a Host header")
    return None


def _fields(request: web.BaseRequest, status: int, started: float, **more: Any) -> dict:
    return {"method": request.method, "path": request.raw_path.partition("?")[0], "status": status,
            "ms": round((time.monotonic() - started) * 1000, 2), "client": request.remote, **more}
