"""One request's way to an answer: attempts at the chosen upstream, retries, a fallback, then the relay.

Until the answer's headers go to the client, a failed attempt may be tried again
(connect errors for any method; broken connections and 502/503/504 for idempotent ones;
never with a body already sent; within the route's count and the upstream's budget;
full-jitter backoff) and a failing new service may hand over to legacy (`fallback`).
Once the headers are sent the answer streams to its end; a failure after that cuts the
client connection, so the client sees a truncated response, never a complete-looking
wrong one. Both bodies stream with back-pressure; neither is held whole.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from functools import partial
from typing import Callable

from proxy.wire.body import RequestBody
from proxy.wire.deadline import Deadline
from proxy.shadow.run import Capture
from proxy.wire.headers import client_lines
from proxy.observe.metrics import Metrics
from proxy.model import Decision, Route, Side, Upstream
from proxy.wire.answers import Relayed, StreamedAnswer, WholeAnswer, drained
from proxy.wire.request import EdgeRequest
from proxy.serve.resilience import Breaker, Resilience
from proxy.wire.answers import error_response
from proxy.wire.pool import UPSTREAM_ERRORS, Exchange, Failure, UpstreamPool

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
GATEWAY_STATUSES = frozenset({502, 503, 504})
NO_OWN_BODY = frozenset({204, 304})
BACKOFF_BASE, BACKOFF_CAP = 0.025, 0.25  # Envoy's


@dataclass(slots=True)
class Outcome:
    """What became of one request: what the client got, and from whom (for metrics, logs and evidence)."""

    response: Relayed
    failure: Failure | None = None
    upstream: str = ""  # who answered; a fallback changes it
    fell_back: bool = False
    route: Route | None = None  # None: refused before routing
    side: Side | None = None  # the side decided on
    waited: float = 0.0  # seconds spent waiting on the client (its body, its reading): not the upstream's


class Forwarder:
    """Serves a decided request: attempts, retries, fallback, relay; counts what it does."""

    def __init__(self, resilience: Resilience, metrics: Metrics) -> None:
        self.resilience, self.metrics = resilience, metrics

    async def serve(self, request: EdgeRequest, decision: Decision, pools: dict[str, UpstreamPool],
                    target: str, head: bytes, rid: str, body: RequestBody,
                    capture: Capture | None = None) -> Outcome:
        route, upstream = decision.route, decision.upstream
        outgoing = _Outgoing(request, decision, target, head, rid, body)
        may_fall_back = route.fallback is Side.LEGACY and decision.side is Side.NEW
        result = await self._attempts(outgoing, route, upstream, pools[upstream.name], capture, may_fall_back)
        if isinstance(result, Outcome):
            return result
        if may_fall_back and _safe_to_resend(request.method, result, body):
            self.metrics.fallbacks.labels(route.name, result.kind).inc()
            second = await self._attempts(outgoing, route, route.legacy, pools[route.legacy.name], capture, False)
            if isinstance(second, Outcome):
                second.fell_back = True
                return second
            result, upstream = second, route.legacy
        return Outcome(_error(result, rid), result, upstream.name, False, route, decision.side, outgoing.waited)

    async def _attempts(self, outgoing: _Outgoing, route: Route, upstream: Upstream, pool: UpstreamPool,
                        capture: Capture | None, may_fall_back: bool) -> Outcome | Failure:
        """The first attempt and its retries at one upstream."""
        breaker = self.resilience.breaker(upstream)
        budget = self.resilience.budget(upstream) if route.retries else None
        if budget is not None:  # the budget is a share of the requests of routes that retry
            budget.note_request()
        for attempt in range(route.retries + 2):  # one more for a stale pooled connection
            retry_left = budget is not None and attempt < route.retries and budget.room()
            hold = partial(_worth_holding, outgoing, may_fall_back, retry_left) if may_fall_back or retry_left \
                else _never
            result = await self._attempt(outgoing, pool, breaker, capture, hold)
            if isinstance(result, Outcome) or not self._retry(outgoing, route, upstream, result, attempt):
                return result
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)))
        return result

    def _retry(self, outgoing: _Outgoing, route: Route, upstream: Upstream, failure: Failure, attempt: int) -> bool:
        if not _retryable(outgoing.request.method, failure, outgoing.body):
            return False
        stale = attempt == 0 and failure.kind == "broken" and route.retries == 0  # what aiohttp would retry
        if not (attempt < route.retries or stale) or not self.resilience.budget(upstream).spend():
            return False
        self.metrics.retries.labels(route.name, upstream.name, "stale_connection" if stale else failure.kind).inc()
        return True

    async def _attempt(self, outgoing: _Outgoing, pool: UpstreamPool, breaker: Breaker,
                       capture: Capture | None, hold: Callable[[int], bool]) -> Outcome | Failure:
        """One exchange with an upstream; a 5xx it is told to `hold` back comes back as a Failure. The
        upstream's deadline covers its time only: waits on the client hold it, and once the whole answer
        has arrived the upstream is let go and the rest is between the proxy and the client."""
        if pool.in_flight >= pool.capacity or breaker.state != "closed":  # the usual: neither
            refused = self._refuse(pool, breaker)
            if refused is not None:
                return refused
        request, body = outgoing.request, outgoing.body
        response: Relayed | None = None
        failure = None
        rest = b""  # the end of a streamed answer, arrived whole: written once the upstream is let go
        paused = False  # a whole answer the client's socket has not taken all of yet
        try:
            with Deadline(pool.spec.timeout, request.loop) as deadline:  # the whole exchange, body included
                if body.stream is not None:
                    body.clock = deadline
                async with pool.request(request.method, outgoing.target, outgoing.head, body.payload(),
                                        body.length) as upstream:
                    breaker.record(upstream.status < 500)
                    if upstream.status >= 500 and hold(upstream.status):
                        return Failure("status", upstream.status,
                                       f"upstream {pool.spec.name} answered {upstream.status}")
                    response = _whole(upstream, request.method, outgoing.rid)
                    if response is not None:
                        paused = response.send(request)
                        if capture is not None:  # once the answer is out: a parallel run never delays it
                            _capture(upstream, capture, response.body)
                    else:
                        response = _streamed(upstream, outgoing.rid, capture, deadline)
                        await response.start(request, upstream.content_length)
                        failure, rest = await _relay_body(upstream, response, pool, capture)
            outgoing.waited += deadline.client_seconds
        except UPSTREAM_ERRORS as exc:
            if response is None or not response.prepared:
                return self._failed(outgoing, pool, breaker, exc, capture)
            if not isinstance(exc, TimeoutError):
                raise  # writing to the client failed: it went away, or stopped reading
            failure = _timed_out(pool, exc, capture)  # mid-body: the client gets a cut answer
        if failure is not None:
            request.protocol.force_close()
        elif paused or isinstance(response, StreamedAnswer):
            await self._finish_answer(outgoing, response, rest)
        return Outcome(response, failure, pool.spec.name, False, outgoing.decision.route, outgoing.decision.side,
                       outgoing.waited)

    @staticmethod
    async def _finish_answer(outgoing: _Outgoing, response: Relayed, rest: bytes) -> None:
        """The client takes the rest of an answer the upstream has finished sending: its time only."""
        started = outgoing.request.loop.time()
        if isinstance(response, StreamedAnswer):
            response.clock = None
            await response.write(rest)
            await response.finish()
        else:
            await drained(outgoing.request)
        outgoing.waited += outgoing.request.loop.time() - started

    def _refuse(self, pool: UpstreamPool, breaker: Breaker) -> Failure | None:
        """Fail fast, without a connection: too many requests waiting, or an open breaker."""
        name = pool.spec.name
        if pool.overloaded:
            self.metrics.shed.labels("upstream").inc()
            return Failure("overloaded", 503, f"upstream {name} has too many requests waiting", sent=False,
                           retry_after=1)
        if not breaker.admit():
            return Failure("breaker_open", 503, f"upstream {name} is failing; its circuit breaker is open",
                           sent=False, retry_after=breaker.retry_after())
        return None

    def _failed(self, outgoing: _Outgoing, pool: UpstreamPool, breaker: Breaker, exc: BaseException,
                capture: Capture | None) -> Failure:
        if outgoing.body.too_slow:
            breaker.record(None)
            return Failure("client_body_timeout", 408, "the request body stopped arriving")
        failure = pool.failure_from(exc)
        breaker.record(None if failure.kind == "busy" else False)
        if capture is not None:
            capture.error = failure.kind
        return failure


class _Outgoing:
    """What every attempt of one request sends: the same target, head and body; and how long its
    exchanges waited on the client."""

    __slots__ = ("request", "decision", "target", "head", "rid", "body", "waited")

    def __init__(self, request: EdgeRequest, decision: Decision, target: str, head: bytes, rid: str,
                 body: RequestBody) -> None:
        self.request, self.decision, self.target, self.head, self.rid, self.body = (
            request, decision, target, head, rid, body)
        self.waited = 0.0


def _never(status: int) -> bool:
    return False


def _timed_out(pool: UpstreamPool, exc: BaseException, capture: Capture | None) -> Failure:
    failure = pool.failure_from(exc)
    if capture is not None:
        capture.error = failure.kind
    return failure


def _worth_holding(outgoing: _Outgoing, may_fall_back: bool, retry_left: bool, status: int) -> bool:
    """Hold a 5xx back from the client only when something else will be tried instead."""
    if outgoing.request.method not in IDEMPOTENT or not outgoing.body.replayable:
        return False
    return may_fall_back or (retry_left and status in GATEWAY_STATUSES)


def _safe_to_resend(method: str, failure: Failure, body: RequestBody) -> bool:
    """Nothing reached the upstream, or the method is idempotent; and the body can still be sent."""
    if not body.replayable or failure.kind == "client_body_timeout":
        return False
    return not failure.sent or method in IDEMPOTENT


def _retryable(method: str, failure: Failure, body: RequestBody) -> bool:
    """Retried: connect failures, broken connections and gateway errors (502/503/504); not an open
    breaker or a full upstream, which another try a few milliseconds later would meet again."""
    if failure.kind in ("breaker_open", "overloaded") or not _safe_to_resend(method, failure, body):
        return False
    return not failure.sent or failure.kind == "broken" or failure.status in GATEWAY_STATUSES


def _error(failure: Failure, rid: str) -> WholeAnswer:
    return error_response(failure.status, _code(failure), failure.detail, rid, failure.retry_after)


def _code(failure: Failure) -> str:
    return {"client_body_timeout": "request_timeout", "overloaded": "overloaded",
            "breaker_open": "breaker_open"}.get(failure.kind, f"upstream_{failure.kind}")


def _whole(upstream: Exchange, method: str, rid: str) -> WholeAnswer | None:
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
    lines = client_lines(upstream.raw_headers, rid=rid, last=upstream.pool.last_answer)
    return WholeAnswer(status, upstream.reason, lines, "Date" in upstream.headers, body, length)


def _streamed(upstream: Exchange, rid: str, capture: Capture | None, clock: Deadline) -> StreamedAnswer:
    """An answer still arriving: its head goes now, its body as it comes."""
    if capture is not None:
        _capture(upstream, capture, b"")
    lines = client_lines(upstream.raw_headers, rid=rid, last=upstream.pool.last_answer)
    answer = StreamedAnswer(upstream.status, upstream.reason, lines, "Date" in upstream.headers)
    answer.clock = clock
    return answer


def _capture(upstream: Exchange, capture: Capture, body: bytes) -> None:
    capture.status, capture.headers = upstream.status, upstream.headers
    if body:
        capture.add(body)


async def _relay_body(upstream: Exchange, response: StreamedAnswer, pool: UpstreamPool,
                      capture: Capture | None) -> tuple[Failure | None, bytes]:
    """Relay the body as it arrives until all of it has: then what is left (up to the answer buffer,
    proxy.wire.connection) comes back, to be written once the upstream is let go."""
    content = upstream.content
    while not content.is_eof():
        try:
            chunk = await content.readany()
        except UPSTREAM_ERRORS as exc:
            failure = pool.failure_from(exc)
            if capture is not None:
                capture.error = failure.kind
            return failure, b""
        if capture is not None:
            capture.add(chunk)
        await response.write(chunk)  # the client's errors are the client's: they propagate
    rest = content.read_nowait()
    if capture is not None and rest:
        capture.add(rest)
    return None, rest
