"""The parallel run: the other side gets the same request at the same time; both answers are compared.

Nothing here changes, slows or fails the client's answer. The served exchange has a
head start of at most HEAD_START: the shadow is sent AFTER_ANSWER after the client has
its answer, or when the head start is over, whichever comes first. With a quick upstream
the shadow's own work (a request written, an answer parsed) then comes once the proxy
has been idle, not in front of the answer nor right behind it; with a slow one both
sides are in flight together. The shadow is a task of its own, on a pool of its own,
under its own timeout; when too many are in flight it is skipped, not queued, and
counted. Every failure on this path is caught and counted; the task never raises into
the handler.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Mapping, Protocol

from proxy.model import (Answered, Decision, FailureKind, Observation, RequestFacts, RequestRecord, Route, Side,
                         SkipReason, Upstream)
from proxy.observe.metrics import Metrics
from proxy.observe.tracing import CURRENT, NOTHING, SpanKind
from proxy.rollout.evidence import Evidence
from proxy.routing.rewrite import relocated_pairs, side_target
from proxy.routing.stickiness import sticky_value
from proxy.shadow.compare import Comparer
from proxy.wire.deadline import Deadline
from proxy.wire.pool import UPSTREAM_ERRORS, UpstreamPool
from proxy.wire.request import EdgeRequest
from toggles.base import Toggles

log = logging.getLogger("strangler.parallel_run")
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
SHADOW_MARK = b"X-Strangler-Shadow: 1\r\n"  # tells the upstream this copy's answer goes nowhere
# Long enough for a quick upstream's answer to reach the client first; short enough that the two
# sides still see the request at the same moment as far as any comparison can tell.
HEAD_START = 0.001
# Once the client has its answer, the shadow waits this long: the proxy goes idle first, and whoever
# the answer woke runs before the shadow's work (sent at once, that work raised the client's p50:
# docs/performance.md). Two milliseconds, as uvloop's timers count whole milliseconds of a clock
# read once per loop turn. Shadows due by then leave together, on one timer.
AFTER_ANSWER = 0.002


class Breaker(Protocol):
    """An upstream's circuit breaker, as a shadow uses it (proxy.serve.resilience has the real one)."""

    def admit(self) -> bool: ...

    def record(self, ok: bool | None) -> None: ...


class Breakers(Protocol):
    """The upstreams' breakers: a shadow respects the same breaker as served requests."""

    def breaker(self, upstream: Upstream) -> Breaker: ...


class ParallelRun:
    """Every request's parallel run: which are in its sample, when each shadow leaves, and what becomes of it."""

    def __init__(self, comparer: Comparer, metrics: Metrics, breakers: Breakers, evidence: Evidence) -> None:
        self.comparer, self.metrics, self.breakers, self.evidence = comparer, metrics, breakers, evidence
        self.in_flight: dict[str, int] = {}  # route -> shadows begun and not done
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: list[Shadow] = []  # answered, waiting for AFTER_ANSWER

    def sampled(self, decision: Decision, facts: RequestFacts | None, toggles: Toggles) -> bool:
        """Whether this request is in the run's sample: by the toggle's own hash when the route has a
        toggle (so the users compared are the users a canary moves next), else at random."""
        run, toggle = decision.route.parallel_run, decision.route.toggle
        if run.sample >= 1:
            return True
        if toggle is None:
            return random.random() < run.sample
        assert facts is not None, "the facts are gathered for a sample below 1"
        sticky = decision.toggle.sticky if decision.toggle else sticky_value(toggle.stickiness, facts)
        if sticky is None:
            return random.random() < run.sample
        return toggles.bucket(toggle.name, sticky) <= run.sample * 100

    def begin(self, decision: Decision, request: EdgeRequest, rid: str, head: bytes, body: bytes | None,
              pools: Mapping[str, UpstreamPool]) -> Shadow | None:
        """The shadow of this request, sent after the served side's head start; the served side then
        hands it its answer (`Shadow.deliver`). Little happens here, on the client's path."""
        route = decision.route
        if self.in_flight.get(route.name, 0) >= route.parallel_run.max_in_flight:
            return self.skip(route, SkipReason.BUSY)
        shadow = Shadow(self, decision, request, rid, head, body, pools)
        self.in_flight[route.name] = self.in_flight.get(route.name, 0) + 1
        shadow.head_start = request.loop.call_later(HEAD_START, shadow.go)
        return shadow

    def skip(self, route: Route, reason: SkipReason) -> None:
        self.metrics.shadows_skipped.labels(route.name, reason).inc()
        return None

    def start(self, shadow: Shadow) -> None:
        """Send the shadow now, in a task of its own."""
        task = shadow.request.loop.create_task(self._run(shadow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def after_answer(self, shadow: Shadow) -> None:
        """Send the shadow AFTER_ANSWER from now, with any others due by then."""
        self._due.append(shadow)
        if len(self._due) == 1:
            shadow.request.loop.call_later(AFTER_ANSWER, self._send_due)

    def _send_due(self) -> None:
        due, self._due = self._due, []
        for shadow in due:
            shadow.go()

    async def drain(self, timeout: float) -> None:
        """Send the shadows due, let running ones finish (up to `timeout`), then cancel the rest."""
        self._send_due()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, shadow: Shadow) -> None:
        route = shadow.decision.route
        if shadow.span is not NOTHING:  # spans are recorded: the shadow's is the parent of its comparison's
            assert shadow.decision.shadow is not None
            shadow.span = shadow.span.child(f"shadow {shadow.decision.shadow.name}", SpanKind.CLIENT,
                                            {"strangler.route": route.name,
                                             "strangler.upstream": shadow.decision.shadow.name})
        try:
            reason = await self._compare(shadow, route)
            if reason is not None:
                self.skip(route, reason)
                shadow.span.set({"strangler.skipped": reason})
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must never reach a client: count it and say it once
            self.skip(route, SkipReason.INTERNAL_ERROR)
            log.exception("the parallel run of a request failed", extra={"route": route.name,
                                                                          "request_id": shadow.rid})
        finally:
            self.in_flight[route.name] -= 1
            shadow.span.end()

    async def _compare(self, shadow: Shadow, route: Route) -> SkipReason | None:
        """Send the shadow (and a noise probe), wait for the served answer, compare; or why not."""
        if isinstance(shadow.answered, SkipReason):
            return shadow.answered  # nothing to compare with: spare the upstream
        decision = shadow.decision
        assert decision.shadow is not None
        breaker = self.breakers.breaker(decision.shadow)
        if not breaker.admit():
            return SkipReason.BREAKER_OPEN  # evidence already counted; spare the upstream
        call = shadow.call(decision.shadow.name, Side.NEW if decision.side is Side.LEGACY else Side.LEGACY)
        if route.compare.noise_probe > 0 and shadow.request.method in SAFE and \
                random.random() < route.compare.noise_probe:  # legacy's second answer too, to learn noise
            other, probe = await asyncio.gather(call, shadow.call(route.legacy.name, Side.LEGACY))
        else:
            other, probe = await call, None
        breaker.record(None if other.error is FailureKind.BUSY else other.error is None and other.status < 500)
        self.metrics.tally.shadow(route.name, other.seconds)
        self.evidence.answered(route.name, other.side, other.status, other.error, other.seconds)  # gates, sides
        if shadow.answered is None:
            await shadow.served_done()
        served = shadow.served()
        if isinstance(served, SkipReason):
            return served
        if (served.body is None and served.error is None) or (other.body is None and other.error is None):
            return SkipReason.BODY_TOO_LARGE
        legacy, new = (served, other) if served.side is Side.LEGACY else (other, served)
        if probe is not None:
            await self.comparer.learn_noise(route, legacy, probe, shadow.at)
        if shadow.span is NOTHING:
            return await self.comparer.compare(route, served.side, shadow, legacy, new)
        span = shadow.span.child("compare", SpanKind.INTERNAL, {"strangler.route": route.name})
        try:
            return await self.comparer.compare(route, served.side, shadow, legacy, new)
        finally:
            span.end()


class Shadow:
    """One request's shadow: waiting for its head start, then sent; and the served side's answer, when
    it comes."""

    __slots__ = ("run", "decision", "request", "rid", "at", "started", "head", "body", "pools", "head_start",
                 "gone", "answered", "seconds", "waiting", "span")

    def __init__(self, run: ParallelRun, decision: Decision, request: EdgeRequest, rid: str, head: bytes,
                 body: bytes | None, pools: Mapping[str, UpstreamPool]) -> None:
        self.run, self.decision, self.request, self.rid = run, decision, request, rid
        self.at, self.started = time.time(), time.monotonic()
        self.head, self.body, self.pools = head, body, pools
        self.head_start: asyncio.TimerHandle | None = None
        self.gone = False  # sent
        self.answered: Answered | SkipReason | None = None  # the served answer, or why there is none
        self.seconds = 0.0  # the served side's time
        self.waiting: asyncio.Future[None] | None = None  # made only when the shadow is back first
        self.span = CURRENT.get()  # the edge request's: the shadow's span is its child

    def go(self) -> None:
        """The served side has had its head start: send the shadow (once)."""
        if not self.gone:
            self.gone = True
            self.run.start(self)

    def deliver(self, answered: Answered | SkipReason) -> None:
        """The served side is done: its answer, or why there is none to compare (client gone, fallback)."""
        if self.answered is not None:
            return
        self.answered, self.seconds = answered, time.monotonic() - self.started
        if self.waiting is not None:
            self.waiting.set_result(None)
        if self.head_start is not None:
            self.head_start.cancel()
        if not self.gone:
            self.run.after_answer(self)

    async def served_done(self) -> None:
        """Wait for the served side (only when the shadow is back first: mostly it is done by then)."""
        self.waiting = self.request.loop.create_future()
        await self.waiting

    def served(self) -> Observation | SkipReason:
        """The served side's answer, or why there is none to compare (once the served side is done)."""
        answered = self.answered
        if isinstance(answered, SkipReason):
            return answered
        assert answered is not None
        observation = answered.observation(self.decision.side, self.seconds)
        rewrite = self.decision.route.rewrite(observation.side)
        if rewrite is None:
            return observation
        return observation._replace(headers=relocated_pairs(observation.headers, rewrite))  # as the client saw it

    @property
    def target(self) -> str:
        return self.request.raw_path

    def record(self) -> RequestRecord:
        """The request, as the report shows it."""
        request, route = self.request, self.decision.route
        sent = {side: side_target(route, side, request.raw_path) for side in Side if route.rewrite(side) is not None}
        return RequestRecord(self.rid, request.method, request.raw_path, tuple(request.headers.items()), self.body,
                             self.at, sent.get(Side.LEGACY), sent.get(Side.NEW))

    async def call(self, upstream: str, side: Side) -> Observation:
        """The shadow exchange: whole answer read, up to the body cap, within the run's timeout."""
        pool, route = self.pools[upstream], self.decision.route
        request, started, run = self.request, time.monotonic(), route.parallel_run
        try:
            with Deadline(run.timeout, request.loop):
                async with pool.request(request.method, side_target(route, side, request.raw_path),
                                        self.head + SHADOW_MARK, self.body) as response:
                    content = response.content
                    if content.is_eof():  # arrived whole (most answers): read at once
                        body = content.read_nowait()
                        body = body if len(body) <= run.max_body else None
                    else:
                        body = await _read_capped(content, run.max_body)
                    headers = relocated_pairs(tuple(response.headers.items()), route.rewrite(side))
            return Observation(side, response.status, headers, body, time.monotonic() - started)
        except TimeoutError:
            return Observation(side, None, seconds=time.monotonic() - started, error=FailureKind.TIMEOUT)
        except UPSTREAM_ERRORS as exc:
            return Observation(side, None, seconds=time.monotonic() - started, error=pool.failure_from(exc).kind)


async def _read_capped(content: Any, limit: int) -> bytes | None:
    """The body of an answer still arriving, or None when it is over `limit`."""
    chunks, size = [], 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
