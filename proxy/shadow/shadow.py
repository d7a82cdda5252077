"""One request's shadow: sent to the other side, its answer observed, and compared with the served answer.

A shadow is driven by callbacks, with no task of its own: its exchange is a Fetch
(proxy.wire.fetch), and whichever comes last of the two answers (the shadow's from the
fetch, the served one from the handler's `deliver`) makes the comparison at once, on the
loop. Only a comparison for the comparison process (large answers) is awaited, in a task.
Every callback here is guarded: a failure ends the shadow, counted, and never reaches the
connection or the client that called it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable, Mapping, Protocol

from proxy.model import (Answered, CompareSpec, Decision, FailureKind, Observation, RequestRecord, Rewrite, Side,
                         SkipReason, Upstream)
from proxy.observe.metrics import Metrics
from proxy.observe.tracing import CURRENT, NOTHING, Span, SpanKind
from proxy.rollout.evidence import Evidence
from proxy.routing.rewrite import relocated_pairs, side_target
from proxy.shadow.compare import Comparer
from proxy.wire.fetch import Fetch, Fetched
from proxy.wire.pool import UpstreamPool
from proxy.wire.request import EdgeRequest

log = logging.getLogger("strangler.parallel_run")
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
SHADOW_MARK = b"X-Strangler-Shadow: 1\r\n"  # tells the upstream this copy's answer goes nowhere


class Breaker(Protocol):
    """An upstream's circuit breaker, as a shadow uses it (proxy.serve.resilience has the real one)."""

    def admit(self) -> bool: ...

    def record(self, ok: bool | None) -> None: ...


class Breakers(Protocol):
    """The upstreams' breakers: a shadow respects the same breaker as served requests."""

    def breaker(self, upstream: Upstream) -> Breaker: ...


class Run(Protocol):
    """What a shadow reports to, and takes its parts from (proxy.shadow.run.ParallelRun)."""

    comparer: Comparer
    metrics: Metrics
    breakers: Breakers
    evidence: Evidence

    def after_answer(self, shadow: Shadow) -> None: ...

    def ended(self, shadow: Shadow, reason: SkipReason | None) -> None: ...


class Shadow:
    """One request's shadow: waiting for its head start, then sent; the two answers as they come."""

    __slots__ = ("run", "decision", "request", "rid", "at", "started", "head", "body", "pools", "gone", "ended",
                 "answered", "seconds", "span", "breaker", "fetches", "other", "probe", "probing", "comparing")

    def __init__(self, run: Run, decision: Decision, request: EdgeRequest, rid: str, head: bytes,
                 body: bytes | None, pools: Mapping[str, UpstreamPool]) -> None:
        self.run, self.decision, self.request, self.rid = run, decision, request, rid
        self.at, self.started = time.time(), time.monotonic()
        self.head, self.body, self.pools = head, body, pools
        self.gone = self.ended = False  # sent; done with (compared, skipped or given up on)
        self.answered: Answered | SkipReason | None = None  # the served answer, or why there is none
        self.seconds = 0.0  # the served side's time
        self.span: Span = CURRENT.get()  # the edge request's: the shadow's span is its child
        self.fetches: list[Fetch] = []
        self.other: Observation | None = None  # the other side's answer
        self.probe: Observation | None = None  # legacy's second answer, when this request probes for noise
        self.probing = False
        self.comparing: asyncio.Task[None] | None = None  # a comparison in the comparison process

    def go(self) -> None:
        """The served side has had its head start: send the shadow (once)."""
        if self.gone:
            return
        self.gone = True
        try:
            self._send()
        except Exception:
            self._failed()

    def deliver(self, answered: Answered | SkipReason) -> None:
        """The served side is done: its answer, or why there is none to compare (client gone, fallback)."""
        if self.answered is not None:
            return
        self.answered, self.seconds = answered, time.monotonic() - self.started
        if not self.gone:
            self.run.after_answer(self)
            return
        try:
            self._compare_when_both()
        except Exception:
            self._failed()

    def cancel(self, reason: SkipReason | None = None) -> None:
        """Given up on: the proxy is stopping (no reason, nothing counted), or something here failed."""
        if self.ended:
            return
        self._end(reason)
        for fetch in self.fetches:
            fetch.cancel()
        if self.comparing is not None and self.comparing is not asyncio.current_task(self.request.loop):
            self.comparing.cancel()

    @property
    def target(self) -> str:
        return self.request.raw_path

    def record(self) -> RequestRecord:
        """The request, as the report shows it."""
        request, route = self.request, self.decision.route
        sent = {side: side_target(route, side, request.raw_path) for side in Side if route.rewrite(side) is not None}
        return RequestRecord(self.rid, request.method, request.raw_path, tuple(request.headers.items()), self.body,
                             self.at, sent.get(Side.LEGACY), sent.get(Side.NEW))

    def _send(self) -> None:
        """The shadow's exchange (and a noise probe's), unless there is nothing to compare with or the
        other side's breaker is open: then the upstream is spared."""
        decision, route = self.decision, self.decision.route
        upstream = decision.shadow
        assert upstream is not None
        if self.span is not NOTHING:  # spans are recorded: the shadow's is the parent of its comparison's
            self.span = self.span.child(f"shadow {upstream.name}", SpanKind.CLIENT,
                                        {"strangler.route": route.name, "strangler.upstream": upstream.name})
        if isinstance(self.answered, SkipReason):
            return self._end(self.answered)
        self.breaker = self.run.breakers.breaker(upstream)
        if not self.breaker.admit():
            return self._end(SkipReason.BREAKER_OPEN)  # evidence already counted
        self.probing = route.compare.noise_probe > 0 and self.request.method in SAFE and \
            random.random() < route.compare.noise_probe
        other = Side.NEW if decision.side is Side.LEGACY else Side.LEGACY
        self._fetch(upstream.name, other, self._other_answered)
        if self.probing:
            self._fetch(route.legacy.name, Side.LEGACY, self._probe_answered)

    def _fetch(self, upstream: str, side: Side, then: Callable[[Observation], None]) -> None:
        route, request, started = self.decision.route, self.request, time.monotonic()
        pool = self.pools[upstream]

        def observed(fetched: Fetched) -> None:  # from the connection's data_received, among others
            if self.ended:
                return
            try:
                then(_observation(fetched, side, pool, route.rewrite(side), time.monotonic() - started))
            except Exception:
                self._failed()
        fetch = Fetch(pool, request.method, side_target(route, side, request.raw_path), self.head + SHADOW_MARK,
                      self.body, route.parallel_run.max_body, observed)
        self.fetches.append(fetch)
        fetch.start(route.parallel_run.timeout, request.loop)

    def _other_answered(self, other: Observation) -> None:
        route = self.decision.route.name
        busy = other.error is FailureKind.BUSY  # our own shedding: not the side's doing
        self.breaker.record(None if busy else other.error is None and (other.status or 0) < 500)
        self.run.metrics.tally.shadow(route, other.seconds)
        self.run.evidence.answered(route, other.side, other.status, other.error, other.seconds)  # gates, sides
        self.other = other
        self._compare_when_both()

    def _probe_answered(self, probe: Observation) -> None:
        self.probe = probe
        self._compare_when_both()

    def _compare_when_both(self) -> None:
        """Once both answers are in (and the probe's, when it probes): the comparison."""
        if self.ended or self.other is None or self.answered is None or (self.probing and self.probe is None):
            return
        served = self._served()
        if isinstance(served, SkipReason):
            return self._end(served)
        other = self.other
        if (served.body is None and served.error is None) or (other.body is None and other.error is None):
            return self._end(SkipReason.BODY_TOO_LARGE)
        legacy, new = (served, other) if served.side is Side.LEGACY else (other, served)
        comparer, route, probe = self.run.comparer, self.decision.route, self.probe
        noise = comparer.quick(legacy, probe, CompareSpec()) if probe is not None else None
        comparison = comparer.quick(legacy, new, route.compare)
        if comparison is None or (probe is not None and noise is None):  # large: the comparison process's
            self.comparing = self.request.loop.create_task(self._compare_away(legacy, new))
            return
        span = self._compare_span()
        if noise is not None:
            comparer.learn(route, noise, self.at)
        comparer.record(route, served.side, self, legacy, new, comparison)
        span.end()
        self._end(None)

    async def _compare_away(self, legacy: Observation, new: Observation) -> None:
        comparer, route, span = self.run.comparer, self.decision.route, self._compare_span()
        try:
            if self.probe is not None:
                await comparer.learn_noise(route, legacy, self.probe, self.at)
            reason = await comparer.compare(route, self.decision.side, self, legacy, new)
        except asyncio.CancelledError:
            raise
        except Exception:
            return self._failed()
        finally:
            span.end()
        self._end(reason)

    def _compare_span(self) -> Span:
        if self.span is NOTHING:
            return NOTHING
        return self.span.child("compare", SpanKind.INTERNAL, {"strangler.route": self.decision.route.name})

    def _served(self) -> Observation | SkipReason:
        """The served side's answer as the client saw it, or why there is none to compare."""
        answered = self.answered
        if isinstance(answered, SkipReason) or answered is None:
            return answered or SkipReason.INTERNAL_ERROR
        observation = answered.observation(self.decision.side, self.seconds)
        rewrite = self.decision.route.rewrite(observation.side)
        if rewrite is None:
            return observation
        return observation._replace(headers=relocated_pairs(observation.headers, rewrite))

    def _failed(self) -> None:
        """A bug here must never reach a client: count it and say it once."""
        if self.ended:
            return
        log.exception("the parallel run of a request failed", extra={"route": self.decision.route.name,
                                                                      "request_id": self.rid})
        self.cancel(SkipReason.INTERNAL_ERROR)

    def _end(self, reason: SkipReason | None) -> None:
        if self.ended:
            return
        self.ended = True
        if reason is not None:
            self.span.set({"strangler.skipped": reason})
        self.run.ended(self, reason)


def _observation(fetched: Fetched, side: Side, pool: UpstreamPool, rewrite: Rewrite | None,
                 seconds: float) -> Observation:
    """What the fetch brought, as the comparison takes it: the headers as the client would see them."""
    if fetched.error is not None:
        return Observation(side, None, seconds=seconds, error=pool.failure_from(fetched.error).kind)
    headers = relocated_pairs(tuple(fetched.headers.items()), rewrite)
    return Observation(side, fetched.status, headers, fetched.body, seconds)
