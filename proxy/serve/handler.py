"""The request handler: each client request is checked, routed and forwarded here; proxy.serve.record counts
and logs it."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Callable, NamedTuple

from aiohttp.http import HttpVersion10, HttpVersion11

from proxy.model import Decision, Failure, FailureKind, RequestFacts, Route, SkipReason
from proxy.observe.logs import REQUEST_ID
from proxy.observe.metrics import Metrics
from proxy.observe.tracing import CURRENT, Tracer, incoming
from proxy.observe.verdicts import VerdictLog
from proxy.rollout.evidence import Evidence
from proxy.routing.decide import decide
from proxy.serve.attempt import Outcome
from proxy.serve.forward import Forwarder
from proxy.serve.live import Generation, LiveConfig
from proxy.serve.record import Recorder
from proxy.shadow.run import ParallelRun
from proxy.wire.answers import Relayed, error_response
from proxy.wire.body import NO_BODY, RequestBody, read_up_to
from proxy.wire.headers import UPGRADE_LINES, request_id, upstream_head
from proxy.wire.request import EdgeRequest
from proxy.wire.target import Refusal, parse_target
from proxy.wire.tunnel import handshake_refusal, wants_websocket

# RFC 3986 host (a reg-name without userinfo, or an IP literal) with an optional port; nginx refuses
# the rest with a 400 too.
TRACEPARENT_LINE = re.compile(rb"(?im)^traceparent:[^\r\n]*\r\n")
VALID_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{0,5})?\Z")
SHADOW_SENT, NOT_SAMPLED = "sent", "not_sampled"  # the access line's `shadow`, beside SkipReason's values


class EdgeHandler:
    """The edge listener's request handler: proxy.wire.server calls it with each request and sends what it
    returns."""

    def __init__(self, live: LiveConfig, metrics: Metrics, parallel_run: ParallelRun, forwarder: Forwarder,
                 evidence: Evidence, cap: Callable[[Route], int | None], tracer: Tracer) -> None:
        self.live, self.metrics, self.tracer = live, metrics, tracer
        self.tracing = tracer.recording  # read once: most proxies do not trace, and pay nothing for it
        self.cap = cap  # the percent a route's rollout plan stands at
        self.parallel_run, self.forwarder = parallel_run, forwarder
        self.verdicts = VerdictLog()
        self.recorder = Recorder(metrics, evidence, tracer)
        self.access = self.recorder.access  # the admin flushes it at shutdown
        self.in_flight = 0
        self.answered = 0

    async def __call__(self, request: EdgeRequest) -> Relayed:
        rid = request_id(request.headers)
        REQUEST_ID.set(rid)  # the edge resets it before the next request on this connection
        started = time.monotonic()
        generation = self.live.current  # one generation for the whole request, whatever a reload does
        if self.in_flight >= generation.config.server.max_in_flight:
            self.metrics.shed.labels("listener").inc()  # shed at once: a queue that grows helps nobody
            return error_response(503, "overloaded", "the proxy is at its limit of requests in flight", rid, 1)
        self.in_flight += 1
        trace = self._trace(request, rid) if self.tracing else UNTRACED
        try:
            outcome = await self._serve(request, rid, generation, trace)
        except (asyncio.CancelledError, ConnectionError) as exc:
            self.recorder.client_failed(request, exc, started, rid)
            CURRENT.get().fail("the client went away")
            CURRENT.get().end()
            raise
        finally:
            self.in_flight -= 1
        if self.tracing:
            outcome.trace = trace.trace_id
        self.answered += 1
        self.recorder.answered(request, outcome, started)
        return outcome.response

    def _trace(self, request: EdgeRequest, rid: str) -> Trace:
        """With tracing on (only then is it called): the edge span, a child of the client's trace or the root
        of a new one (the request id an attribute of it), and the `traceparent` line its upstreams get in
        place of the client's. With tracing off the client's trace context passes as sent and nothing is
        done at all, as Envoy does without a tracer."""
        given = "traceparent" in request.headers
        span = self.tracer.edge(incoming(request.headers) if given else None, request.method,
                                {"http.request.method": request.method, "strangler.request_id": rid})
        CURRENT.set(span)
        context = span.context
        return Trace(context.trace_id, b"traceparent: %s\r\n" % context.traceparent, given)

    async def _serve(self, request: EdgeRequest, rid: str, generation: Generation, trace: Trace) -> Outcome:
        refusal = _refusal(request)
        path = parse_target(request.raw_path) if refusal is None else refusal
        if isinstance(path, Refusal):
            self.metrics.rejected.labels(path.code).inc()
            refused = error_response(path.status, path.code, path.detail, rid)
            refused.force_close()  # what follows on this connection cannot be trusted either
            return Outcome(refused)
        method = request.method
        route = generation.index.match(method, path, request.headers)
        if route is None:
            return Outcome(error_response(404, "no_route", f"no route matches {method} {path}", rid))
        decision, facts = self._decide(request, route, path, generation)
        if request.upgrade and wants_websocket(request.headers):
            return await self._tunnel(request, route, decision, rid, generation, trace)
        head = upstream_head(request.raw_headers, peer=request.remote, proto=request.scheme, rid=rid,
                             last=request.protocol.last_head)
        if self.tracing:
            head = trace.onto(head)
        server = generation.config.server
        request.send_timeout = server.send_timeout
        try:
            if decision.shadow is None:  # most requests: no body, and then not even a coroutine to learn it
                body, waited = await _buffered(request, server.request_buffer, server.body_timeout) \
                    if request.body_exists else (NO_BODY, 0.0)
                outcome = await self.forwarder.serve(request, decision, generation.pools, request.raw_path, head, rid,
                                                     body)
                outcome.waited += waited
            else:
                outcome = await self._forward_shadowed(request, decision, facts, generation, head, rid)
        except TimeoutError:  # the body stopped arriving while it was read ahead of the exchange
            slow = error_response(408, "request_timeout", "the request body stopped arriving", rid)
            failure = Failure(FailureKind.CLIENT_BODY_TIMEOUT, 408, "the request body stopped arriving", sent=False)
            slow.force_close()  # not lingering to read the rest of a body that is not coming
            return Outcome(slow, failure, route=route)
        if outcome.failure is not None and outcome.failure.kind is FailureKind.CLIENT_BODY_TIMEOUT:
            outcome.response.force_close()
        return outcome

    async def _tunnel(self, request: EdgeRequest, route: Route, decision: Decision, rid: str,
                      generation: Generation, trace: Trace) -> Outcome:
        """A WebSocket handshake: checked, then forwarded like any request, never shadowed; after the
        upstream's 101 it is a tunnel (proxy.serve.attempt)."""
        problem = handshake_refusal(request.method, request.version, request.headers, request.body_exists)
        code = "bad_request"
        if problem is None and not route.websocket:
            problem, code = f"route '{route.name}' does not take WebSocket connections", "websocket_not_allowed"
        if problem is not None:
            self.metrics.rejected.labels(code).inc()
            refused = error_response(400, code, problem, rid)
            refused.force_close()
            toggle = decision.toggle.verdict if decision.toggle is not None else None  # for the access line
            return Outcome(refused, route=route, toggle=toggle)
        shadowed = decision.shadow is not None
        if shadowed:
            self.parallel_run.skip(route, SkipReason.UPGRADE)
            decision = decision._replace(shadow=None)
        head = trace.onto(upstream_head(request.raw_headers, peer=request.remote, proto=request.scheme, rid=rid)) \
            + UPGRADE_LINES
        outcome = await self.forwarder.serve(request, decision, generation.pools, request.raw_path, head, rid,
                                             NO_BODY, tunnel_idle=generation.config.server.tunnel_idle_timeout)
        if shadowed:
            outcome.shadow = SkipReason.UPGRADE
        return outcome

    def _decide(self, request: EdgeRequest, route: Route, path: str,
                generation: Generation) -> tuple[Decision, RequestFacts | None]:
        """Who serves this request, and the facts a toggle looks at: gathered only when one has a say."""
        decision = generation.fixed.get(route, request.method)
        if decision is not None and (decision.shadow is None or decision.route.parallel_run.sample >= 1):
            return decision, None  # nobody looks at the facts
        facts = RequestFacts(request.method, path, request.headers, request.remote)
        if decision is not None:  # the run's sample may hash a toggle's sticky value
            return decision, facts
        decision = decide(route, facts, generation.toggles, self.cap(route) if route.rollout_plan is not None else None)
        if decision.toggle is not None:
            self._count_verdict(decision)
        return decision, facts

    async def _forward_shadowed(self, request: EdgeRequest, decision: Decision, facts: RequestFacts | None,
                                generation: Generation, head: bytes, rid: str) -> Outcome:
        """A request whose decision has a shadow: served, and (when it is in the run's sample) shadowed.
        `facts`: the run's sample may hash a toggle's sticky value."""
        server, run = generation.config.server, decision.route.parallel_run
        shadow, note = None, NOT_SAMPLED  # note: what the access line says the parallel run did
        sampled = self.parallel_run.sampled(decision, facts, generation.toggles)
        # a shadow is sent the body whole: then it is read ahead up to the run's cap too
        limit = max(run.max_body, server.request_buffer) if sampled else server.request_buffer
        body, waited = await _buffered(request, limit, server.body_timeout) if request.body_exists else (NO_BODY, 0.0)
        if sampled:
            if body.stream is None and len(body.data or b"") <= run.max_body:
                shadow = self.parallel_run.begin(decision, request, rid, head, body.data, generation.shadow_pools)
                note = SHADOW_SENT if shadow is not None else SkipReason.BUSY
            else:
                self.parallel_run.skip(decision.route, SkipReason.REQUEST_TOO_LARGE)
                note = SkipReason.REQUEST_TOO_LARGE
        try:
            outcome = await self.forwarder.serve(request, decision, generation.pools, request.raw_path, head, rid,
                                                 body, run.max_body if shadow is not None else 0)
        except BaseException:
            if shadow is not None:
                shadow.deliver(SkipReason.CLIENT_GONE)  # no answer to compare: the client left, or worse
            raise
        if shadow is not None:  # after a fallback the served answer is not the side decided on
            shadow.deliver(SkipReason.FALLBACK if outcome.fell_back else outcome.answered or SkipReason.INTERNAL_ERROR)
            note = SkipReason.FALLBACK if outcome.fell_back else note
        outcome.waited += waited
        outcome.shadow = note
        return outcome

    def _count_verdict(self, decision: Decision) -> None:
        check = decision.toggle
        assert check is not None
        self.metrics.toggle_verdicts.labels(decision.route.name, check.name, check.verdict).inc()
        self.verdicts.note(decision.route.name, check.name, check.verdict)

class Trace(NamedTuple):
    """A request's place in its trace, and how its upstreams are told of it."""

    trace_id: str
    line: bytes  # the traceparent line an upstream gets, or b"" when the client's passes as sent
    replaces: bool  # the client's own traceparent is taken out first

    def onto(self, head: bytes) -> bytes:
        if not self.line:
            return head
        if self.replaces:
            head = TRACEPARENT_LINE.sub(b"", head)
        return head + self.line


UNTRACED = Trace("", b"", False)  # tracing off: the head is sent as made


async def _buffered(request: EdgeRequest, limit: int, idle: float) -> tuple[RequestBody, float]:
    """The body of a request that has one (a request without takes NO_BODY, with no coroutine for it), read
    whole ahead of the exchange when it is at most `limit` bytes (else the rest streams), and the seconds
    that took: the client's time."""
    started = request.loop.time()
    body, _ = await read_up_to(request, limit, idle)
    return body, request.loop.time() - started


def _refusal(request: EdgeRequest) -> Refusal | None:
    """Request-level checks aiohttp's parser leaves to us (reliability.md HTTP-10, HTTP-18)."""
    version, headers = request.version, request.headers
    host = headers.get("Host")
    if version == HttpVersion11:
        if host is None:
            return Refusal("an HTTP/1.1 request needs a Host header")
    elif version != HttpVersion10:
        return Refusal(f"HTTP/{version.major}.{version.minor} is not supported")
    elif "Transfer-Encoding" in headers:
        return Refusal("Transfer-Encoding is not allowed in an HTTP/1.0 request")
    if host is not None and host not in _VALID_HOSTS and not _valid_host(host):
        return Refusal("the Host header is not a valid host name or address (with an optional port)")
    if request.chunked and headers.get("Transfer-Encoding", "").strip().lower() != "chunked":
        return Refusal("the only transfer coding this proxy accepts is chunked", 501, "not_implemented")
    return None


# Hosts found valid. Clients send the same few Host values request after request, so each is matched
# once and remembered, up to HOSTS_KEPT of them; past that, the others are matched every time.
HOSTS_KEPT = 1024
_VALID_HOSTS: set[str] = set()


def _valid_host(host: str) -> bool:
    if not VALID_HOST.match(host):
        return False
    if len(_VALID_HOSTS) < HOSTS_KEPT:
        _VALID_HOSTS.add(host)
    return True
