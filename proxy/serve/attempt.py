"""One attempt at an upstream: the exchange, and its answer relayed to the client as it arrives.

The upstream's deadline covers its own time only: while the exchange waits on the client
(for more of a streamed body, for room in its socket) the deadline is held, and once the
whole answer has arrived the upstream is let go and the rest is between the proxy and the
client. When a parallel run will compare the answer, a copy is kept as it passes, up to
the run's cap, and handed back with the outcome (`Answered`). An upstream's 101 to a
WebSocket handshake goes to the client, and the two connections are then joined
(proxy.wire.tunnel) for as long as the tunnel lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from proxy.model import Answered, BreakerState, Decision, Failure, FailureKind, Rewrite, Route, Side
from proxy.observe.metrics import Metrics
from proxy.routing.rewrite import relocated, sent_target
from proxy.serve.resilience import Breaker
from proxy.wire.answers import Relayed, StreamedAnswer, SwitchingAnswer, WholeAnswer, drained
from proxy.wire.body import RequestBody
from proxy.wire.deadline import Deadline
from proxy.wire.exchange import EMPTY_HEADERS, Exchange
from proxy.wire.headers import client_lines
from proxy.wire.pool import UPSTREAM_ERRORS, UpstreamPool
from proxy.wire.request import EdgeRequest
from proxy.wire.tunnel import Tunnel

NO_OWN_BODY = frozenset({204, 304})


@dataclass(slots=True)
class Outcome:
    """What became of one request: what the client got, and from whom (for metrics, logs and evidence)."""

    response: Relayed
    failure: Failure | None = None
    upstream: str = ""  # who answered; a fallback changes it
    fell_back: FailureKind | None = None  # why the new side was given up for legacy, when it was
    route: Route | None = None  # None: refused before routing
    side: Side | None = None  # the side decided on
    waited: float = 0.0  # seconds spent waiting on the client (its body, its reading): not the upstream's
    answered: Answered | None = None  # the answer as a parallel run compares it, when one asked (Outgoing.keep)
    tunnel: Tunnel | None = None  # the WebSocket tunnel the request became, once it has ended
    sent: str | None = None  # the target the upstream got, when a rewrite made it other than the client's
    toggle: str | None = None  # the toggle's verdict, when one decided the side
    shadow: str | None = None  # what the parallel run did: "sent", "not_sampled" or why it was skipped
    trace: str | None = None  # the trace id, for the access line


class Outgoing:
    """What every attempt of one request sends (the same target, head and body), how long its exchanges
    waited on the client, and the answer kept for a parallel run (`keep`: its cap in bytes, 0 for none)."""

    __slots__ = ("request", "decision", "target", "head", "rid", "body", "keep", "tunnel_idle", "waited",
                 "answered", "rewrite")

    def __init__(self, request: EdgeRequest, decision: Decision, target: str, head: bytes, rid: str,
                 body: RequestBody, keep: int = 0, tunnel_idle: float | None = None) -> None:
        self.request, self.decision, self.target, self.head, self.rid, self.body = (
            request, decision, target, head, rid, body)
        self.keep = keep
        self.tunnel_idle = tunnel_idle  # a WebSocket handshake: its tunnel's idle timeout; else None
        self.waited = 0.0
        self.answered: Answered | None = None
        self.rewrite: Rewrite | None = None  # the rewrite of the side being tried: its Locations map back

    def towards(self, side: Side, raw: str) -> None:
        """Send `side` its own form of the client's target `raw` (the route's rewrite for it, if any)."""
        self.rewrite = self.decision.route.rewrite(side)
        self.target = raw if self.rewrite is None else sent_target(self.rewrite, raw)

    def outcome(self, response: Relayed, failure: Failure | None, upstream: str) -> Outcome:
        decision = self.decision
        outcome = Outcome(response, failure, upstream, None, decision.route, decision.side, self.waited, self.answered)
        if decision.toggle is not None:
            outcome.toggle = decision.toggle.verdict
        if self.rewrite is not None:
            outcome.sent = self.target
        return outcome

    def unanswered(self, failure: Failure) -> None:
        """No answer came: a parallel run compares the failure."""
        if self.keep:
            self.answered = Answered(None, EMPTY_HEADERS, None, failure.kind)


async def attempt(outgoing: Outgoing, pool: UpstreamPool, breaker: Breaker, metrics: Metrics,
                  hold: Callable[[int], bool]) -> Outcome | Failure:
    """One exchange with an upstream; a 5xx it is told to `hold` back comes back as a Failure."""
    if pool.in_flight >= pool.capacity or breaker.state is not BreakerState.CLOSED:  # the usual: neither
        refused = _refused(pool, breaker, metrics)
        if refused is not None:
            return refused
    request, body = outgoing.request, outgoing.body
    response: Relayed | None = None
    kept: Kept | None = None
    failure = None
    full = False  # the client's socket took the answer only in part: the rest waits for it
    rest = b""  # the end of a streamed answer, arrived whole: written once the upstream is let go
    try:
        timeout = outgoing.decision.route.timeout  # a route's own, as Envoy's, over the upstream's
        with Deadline(pool.spec.timeout if timeout is None else timeout, request.loop) as deadline:
            if body.stream is not None:
                body.clock = deadline
            async with pool.request(request.method, outgoing.target, outgoing.head, body.payload(),
                                    body.length, outgoing.tunnel_idle is not None) as upstream:
                breaker.record(upstream.status < 500)
                if upstream.status == 101:
                    return await _tunnel(outgoing, upstream, pool.spec.name, deadline, metrics)
                if upstream.status >= 500 and hold(upstream.status):
                    return Failure(FailureKind.STATUS, upstream.status,
                                   f"upstream {pool.spec.name} answered {upstream.status}")
                kept = Kept(outgoing.keep, upstream) if outgoing.keep else None
                response = _whole(upstream, request.method, outgoing.rid, outgoing.rewrite)
                if response is not None:
                    full = response.send(request)
                    if kept is not None:  # once the answer is out: a parallel run never delays it
                        kept.add(response.body)
                else:
                    response = _streamed(upstream, outgoing.rid, deadline, outgoing.rewrite)
                    await response.start(request, upstream.content_length)
                    failure, rest = await _relay_body(upstream, response, pool, kept)
        outgoing.waited += deadline.client_seconds
    except UPSTREAM_ERRORS as exc:
        if response is None or not response.prepared:
            return _failed(outgoing, pool, breaker, exc)
        if not isinstance(exc, TimeoutError):
            raise  # writing to the client failed: it went away, or stopped reading
        failure = pool.failure_from(exc)  # mid-body: the client gets a cut answer
    if kept is not None:
        outgoing.answered = kept.answered(failure)
    if failure is not None:
        request.hang_up()
    elif full or isinstance(response, StreamedAnswer):
        await _finish_answer(outgoing, response, rest)
    return outgoing.outcome(response, failure, pool.spec.name)


class Kept:
    """The answer as it passes, up to `limit` bytes of body (past it, none)."""

    __slots__ = ("limit", "upstream", "chunks", "size")

    def __init__(self, limit: int, upstream: Exchange) -> None:
        self.limit, self.upstream = limit, upstream
        self.chunks: list[bytes] | None = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        if self.chunks is None or not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.chunks = None
        else:
            self.chunks.append(chunk)

    def answered(self, failure: Failure | None) -> Answered:
        upstream = self.upstream
        return Answered(upstream.status, upstream.headers, self.chunks, failure.kind if failure else None)


def _refused(pool: UpstreamPool, breaker: Breaker, metrics: Metrics) -> Failure | None:
    """Fail fast, without a connection: too many requests waiting, or an open breaker."""
    name = pool.spec.name
    if pool.overloaded:
        metrics.shed.labels("upstream").inc()
        return Failure(FailureKind.OVERLOADED, 503, f"upstream {name} has too many requests waiting", sent=False,
                       retry_after=1)
    if not breaker.admit():
        return Failure(FailureKind.BREAKER_OPEN, 503, f"upstream {name} is failing; its circuit breaker is open",
                       sent=False, retry_after=breaker.retry_after())
    return None


def _failed(outgoing: Outgoing, pool: UpstreamPool, breaker: Breaker, exc: BaseException) -> Failure:
    """No answer: the client's body stopped arriving (its failure, not the upstream's), or what the pool
    says went wrong."""
    if outgoing.body.too_slow:
        breaker.record(None)
        return Failure(FailureKind.CLIENT_BODY_TIMEOUT, 408, "the request body stopped arriving")
    failure = pool.failure_from(exc)
    breaker.record(None if failure.kind is FailureKind.BUSY else False)
    return failure


async def _tunnel(outgoing: Outgoing, upstream: Exchange, name: str, deadline: Deadline,
                  metrics: Metrics) -> Outcome:
    """The upstream switched to WebSocket: its 101 goes to the client, then the two connections are joined
    until either closes or the tunnel goes silent. No fallback and no shadow: the switch is made."""
    deadline.hold()  # a tunnel lives as long as its two ends keep it alive: not the upstream's timeout
    request, conn = outgoing.request, upstream.conn
    assert conn is not None and outgoing.tunnel_idle is not None
    lines = client_lines(upstream.raw_headers, rid=outgoing.rid)
    response = SwitchingAnswer(101, upstream.reason, lines, "Date" in upstream.headers)
    response.send(request)
    tunnel = Tunnel(request.protocol, conn, outgoing.tunnel_idle, request.loop)
    route = outgoing.decision.route.name
    metrics.tunnels_open.labels(route).inc()
    tunnel.join(request.protocol.take_early(), conn.take_early())
    try:
        await tunnel.run()
    finally:
        metrics.tunnels_open.labels(route).dec()
        metrics.tunnels.labels(route, tunnel.ended.result()).inc()
    outgoing.waited += request.loop.time() - tunnel.started  # the tunnel's life is its two ends', not latency
    outcome = outgoing.outcome(response, None, name)
    outcome.tunnel = tunnel
    return outcome


async def _finish_answer(outgoing: Outgoing, response: Relayed, rest: bytes) -> None:
    """The client takes the rest of an answer the upstream has finished sending: its time only."""
    request = outgoing.request
    started = request.loop.time()
    if isinstance(response, StreamedAnswer):
        response.clock = None
        await response.write(rest)
        await response.finish()
    else:
        await drained(request)
    outgoing.waited += request.loop.time() - started


def _whole(upstream: Exchange, method: str, rid: str, rewrite: Rewrite | None) -> WholeAnswer | None:
    """The answer, when all of it has already arrived (most small answers) or it has no body of its
    own (to a HEAD; 204, 304, which keep the upstream's Content-Length but for a 204): it then
    leaves in one write. None while its body is still coming."""
    status, content = upstream.status, upstream.content
    if method == "HEAD" or status in NO_OWN_BODY or status < 200:
        body, length = b"", None if status == 204 or status < 200 else upstream.content_length
    elif content.is_eof():
        body = content.read_nowait()
        length = len(body)
    else:
        return None
    raw = upstream.raw_headers if rewrite is None else relocated(upstream.raw_headers, rewrite)
    lines = client_lines(raw, rid=rid, last=upstream.pool.last_answer)
    return WholeAnswer(status, upstream.reason, lines, "Date" in upstream.headers, body, length)


def _streamed(upstream: Exchange, rid: str, clock: Deadline, rewrite: Rewrite | None) -> StreamedAnswer:
    """An answer still arriving: its head goes now, its body as it comes."""
    raw = upstream.raw_headers if rewrite is None else relocated(upstream.raw_headers, rewrite)
    lines = client_lines(raw, rid=rid, last=upstream.pool.last_answer)
    answer = StreamedAnswer(upstream.status, upstream.reason, lines, "Date" in upstream.headers)
    answer.clock = clock
    return answer


async def _relay_body(upstream: Exchange, response: StreamedAnswer, pool: UpstreamPool,
                      kept: Kept | None) -> tuple[Failure | None, bytes]:
    """Relay the body as it arrives until all of it has: then what is left (up to the answer buffer,
    proxy.wire.connection) comes back, to be written once the upstream is let go."""
    content = upstream.content
    while not content.is_eof():
        try:
            chunk = await content.readany()
        except UPSTREAM_ERRORS as exc:
            return pool.failure_from(exc), b""
        if kept is not None:
            kept.add(chunk)
        await response.write(chunk)  # the client's errors are the client's: they propagate
    rest = content.read_nowait()
    if kept is not None:
        kept.add(rest)
    return None, rest
