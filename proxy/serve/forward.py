"""One request's way to an answer: attempts at the chosen upstream, retries, and a fallback.

Until the answer's headers go to the client, a failed attempt may be tried again
(connect errors for any method; broken connections and 502/503/504 for idempotent ones;
never with a body already sent; within the route's count and the upstream's budget;
full-jitter backoff) and a failing new service may hand over to legacy (`fallback`).
Once the headers are sent the answer streams to its end (proxy.serve.attempt); a failure
after that cuts the client connection, so the client sees a truncated response, never a
complete-looking wrong one.
"""

from __future__ import annotations

import asyncio
import random
from functools import partial
from typing import Awaitable

from proxy.model import Decision, Failure, FailureKind, Route, Side, Upstream
from proxy.observe.metrics import Metrics
from proxy.observe.tracing import CURRENT, NOTHING, SpanKind
from proxy.serve.attempt import Outcome, Outgoing, attempt
from proxy.serve.resilience import Resilience
from proxy.wire.answers import WholeAnswer, error_response
from proxy.wire.body import RequestBody
from proxy.wire.pool import UpstreamPool
from proxy.wire.request import EdgeRequest

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
GATEWAY_STATUSES = frozenset({502, 503, 504})
BACKOFF_BASE, BACKOFF_CAP = 0.025, 0.25  # Envoy's
# Failures another try a few milliseconds later would meet again.
NOT_RETRIED = frozenset({FailureKind.BREAKER_OPEN, FailureKind.OVERLOADED, FailureKind.CLIENT_BODY_TIMEOUT})
# The proxy's own error codes, where they are not upstream_<kind>.
CODES = {FailureKind.CLIENT_BODY_TIMEOUT: "request_timeout", FailureKind.OVERLOADED: "overloaded",
         FailureKind.BREAKER_OPEN: "breaker_open"}


class Forwarder:
    """Serves a decided request: attempts, retries, fallback; counts what it does."""

    def __init__(self, resilience: Resilience, metrics: Metrics) -> None:
        self.resilience, self.metrics = resilience, metrics

    async def serve(self, request: EdgeRequest, decision: Decision, pools: dict[str, UpstreamPool],
                    target: str, head: bytes, rid: str, body: RequestBody, keep: int = 0,
                    tunnel_idle: float | None = None) -> Outcome:
        """The answer the client gets; `target`: the client's, each side is sent its own form of it
        (proxy.routing.rewrite). `keep`: bytes of the answer to keep for a parallel run (0: none);
        `tunnel_idle`: the request is a WebSocket handshake, and its tunnel's idle timeout."""
        route, upstream = decision.route, decision.upstream
        outgoing = Outgoing(request, decision, target, head, rid, body, keep, tunnel_idle)
        if route.legacy_rewrite is not None or route.new_rewrite is not None:
            outgoing.towards(decision.side, target)
        may_fall_back = route.fallback is Side.LEGACY and decision.side is Side.NEW
        pool = pools[upstream.name]
        if route.retries or may_fall_back or CURRENT.get() is not NOTHING:
            result = await self._attempts(outgoing, route, upstream, pool, may_fall_back)
        else:  # most requests: one attempt, awaited here rather than through _attempts' loop
            result = await attempt(outgoing, pool, self.resilience.breaker(upstream), self.metrics, _never)
            if not isinstance(result, Outcome) and self._retry(outgoing, route, upstream, result, 0):
                result = await self._attempts(outgoing, route, upstream, pool, False, first=1)  # a stale connection
        if isinstance(result, Outcome):
            return result
        if may_fall_back and _safe_to_resend(request.method, result, body):
            self.metrics.fallbacks.labels(route.name, result.kind).inc()
            outgoing.towards(Side.LEGACY, target)  # legacy gets its own form of the path, not the new side's
            second = await self._attempts(outgoing, route, route.legacy, pools[route.legacy.name], False)
            if isinstance(second, Outcome):
                second.fell_back = result.kind
                return second
            result, upstream = second, route.legacy
        outgoing.unanswered(result)
        return outgoing.outcome(_error(result, rid), result, upstream.name)

    async def _attempts(self, outgoing: Outgoing, route: Route, upstream: Upstream, pool: UpstreamPool,
                        may_fall_back: bool, first: int = 0) -> Outcome | Failure:
        """The first attempt and its retries at one upstream; `first`: the try to begin with (1 on a route
        without retries whose first try, made by `serve`, met a stale pooled connection)."""
        breaker = self.resilience.breaker(upstream)
        budget = self.resilience.budget(upstream) if route.retries else None
        if budget is not None:  # the budget is a share of the requests of routes that retry
            budget.note_request()
        for tried in range(first, route.retries + 2):  # one more for a stale pooled connection
            if tried:  # a retry: full jitter backoff first
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (tried - 1))))
            retry_left = budget is not None and tried < route.retries and budget.room()
            hold = partial(_worth_holding, outgoing, may_fall_back, retry_left) if may_fall_back or retry_left \
                else _never
            sending = attempt(outgoing, pool, breaker, self.metrics, hold)
            result = await (sending if CURRENT.get() is NOTHING else _traced(sending, upstream.name, tried))
            if isinstance(result, Outcome) or not self._retry(outgoing, route, upstream, result, tried):
                return result
        return result

    def _retry(self, outgoing: Outgoing, route: Route, upstream: Upstream, failure: Failure, tried: int) -> bool:
        if not _retryable(outgoing.request.method, failure, outgoing.body):
            return False
        stale = tried == 0 and failure.kind is FailureKind.BROKEN and route.retries == 0  # what aiohttp would retry
        if not (tried < route.retries or stale) or not self.resilience.budget(upstream).spend():
            return False
        self.metrics.retries.labels(route.name, upstream.name, "stale_connection" if stale else failure.kind).inc()
        return True


async def _traced(sending: Awaitable[Outcome | Failure], upstream: str, tried: int) -> Outcome | Failure:
    """An attempt, as a span under the edge request's (spans are recorded)."""
    span = CURRENT.get().child(f"upstream {upstream}", SpanKind.CLIENT, {"strangler.upstream": upstream,
                                                                   "strangler.attempt": tried + 1})
    try:
        result = await sending
    except BaseException as exc:
        span.fail(type(exc).__name__)
        span.end()
        raise
    if isinstance(result, Outcome):
        span.set({"http.response.status_code": result.response.status})
    else:
        span.fail(result.detail)
    span.end()
    return result


def _never(status: int) -> bool:
    return False


def _worth_holding(outgoing: Outgoing, may_fall_back: bool, retry_left: bool, status: int) -> bool:
    """Hold a 5xx back from the client only when something else will be tried instead."""
    if outgoing.request.method not in IDEMPOTENT or not outgoing.body.replayable:
        return False
    return may_fall_back or (retry_left and status in GATEWAY_STATUSES)


def _safe_to_resend(method: str, failure: Failure, body: RequestBody) -> bool:
    """Nothing reached the upstream, or the method is idempotent; and the body can still be sent."""
    if not body.replayable or failure.kind is FailureKind.CLIENT_BODY_TIMEOUT:
        return False
    return not failure.sent or method in IDEMPOTENT


def _retryable(method: str, failure: Failure, body: RequestBody) -> bool:
    """Retried: connect failures, broken connections and gateway errors (502/503/504)."""
    if failure.kind in NOT_RETRIED or not _safe_to_resend(method, failure, body):
        return False
    return not failure.sent or failure.kind is FailureKind.BROKEN or failure.status in GATEWAY_STATUSES


def _error(failure: Failure, rid: str) -> WholeAnswer:
    code = CODES.get(failure.kind, f"upstream_{failure.kind}")
    return error_response(failure.status, code, failure.detail, rid, failure.retry_after)
