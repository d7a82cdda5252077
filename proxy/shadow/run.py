"""The parallel run: the other side gets the same request at the same time; both answers are compared.

Nothing here changes, slows or fails the client's answer. The served exchange has a
head start of at most HEAD_START: the shadow is sent AFTER_ANSWER after the client has
its answer, or when the head start is over, whichever comes first. With a quick upstream
the shadow's own work (a request written, an answer parsed) then comes once the proxy
has been idle, not in front of the answer nor right behind it; with a slow one both
sides are in flight together. The shadow is a task of its own, on a pool of its own,
under its own timeout; when too many are in flight it is skipped, not queued, and
counted. Large answers are compared in a worker process. Every failure on this path is
caught and counted; the task never raises into the handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from typing import Any, Awaitable, Callable, Collection, Mapping, Protocol

from comparators.base import Comparator
from proxy.wire.deadline import Deadline
from proxy.rollout.evidence import Evidence
from proxy.observe.metrics import Metrics
from proxy.model import (CompareSpec, Comparison, Decision, Difference, Divergence, Observation, RequestFacts,
                         RequestRecord, Route, Side, Upstream)
from proxy.model.jsonpath import covers, generalize
from proxy.routing.stickiness import sticky_value
from proxy.wire.request import EdgeRequest
from proxy.wire.pool import EMPTY_HEADERS, UPSTREAM_ERRORS, UpstreamPool
from reports.base import DivergenceSink
from toggles.base import Toggles

log = logging.getLogger("strangler.parallel_run")
CompareCall = Callable[[Observation, Observation, CompareSpec], Awaitable[Comparison]]
# Comparing two answers this small takes tens of microseconds, handing them to the worker
# process hundreds (pickling, pipes, its threads): they are compared here, large ones there.
INLINE_BYTES = 16 << 10
# Comparisons waiting for the worker process. A few keep it busy; more would only hold their
# bodies in memory and make each wait longer (64 of 200 KiB answers moved the proxy's p99 from
# 5 to 12-50 ms in the benchmark), for no more comparisons per second.
COMPARE_QUEUE = 4
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
SHADOW_MARK = b"X-Strangler-Shadow: 1\r\n"  # tells the upstream this copy's answer goes nowhere
# Long enough for a quick upstream's answer to reach the client first; short enough that the two
# sides still see the request at the same moment as far as any comparison can tell.
HEAD_START = 0.001
# Once the client has its answer, the shadow waits this long: the proxy goes idle first, and whoever
# the answer woke runs before the shadow's work. Sent at once, that work (a task, a request written)
# ran while the answer's reader waited for a core: on one machine, the client's p50 rose by a fifth
# to two fifths, and every percentile with it. Two milliseconds, as uvloop's timers count whole
# milliseconds of a clock read once per loop turn: one might already be over at the next turn, with
# no sleep. Shadows due by then leave together, on one timer.
AFTER_ANSWER = 0.002
MATCHED = Comparison(())


class Breaker(Protocol):
    """An upstream's circuit breaker, as a shadow uses it (proxy.serve.resilience has the real one)."""

    def admit(self) -> bool: ...

    def record(self, ok: bool | None) -> None: ...


class Breakers(Protocol):
    """The upstreams' breakers: a shadow respects the same breaker as served requests."""

    def breaker(self, upstream: Upstream) -> Breaker: ...


class Capture:
    """The served answer as it streams past: status and headers, the body up to `limit`, and how long it
    took. Only references are kept here, on the client's path; the Observation is made in the shadow's
    task, after the client has its answer."""

    __slots__ = ("limit", "started", "status", "headers", "chunks", "size", "overflow", "error", "seconds")

    def __init__(self, limit: int) -> None:
        self.limit, self.started = limit, time.monotonic()
        self.status: int | None = None
        self.headers: Mapping[str, str] = EMPTY_HEADERS  # the upstream's, as aiohttp's parser made them
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False
        self.error: str | None = None
        self.seconds = 0.0

    def add(self, chunk: bytes) -> None:
        if self.overflow:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflow, self.chunks = True, []
        else:
            self.chunks.append(chunk)

    def observation(self, side: Side) -> Observation:
        body = None if self.overflow else b"".join(self.chunks)
        return Observation(side, self.status, tuple(self.headers.items()), body, self.seconds, self.error)


class Experiments:
    """Starts the parallel run of eligible requests and carries both answers to comparison and the store."""

    def __init__(self, comparator: Comparator, compare_away: CompareCall, sink: DivergenceSink, metrics: Metrics,
                 resilience: Breakers, evidence: Evidence, max_pending: int = COMPARE_QUEUE) -> None:
        self.comparator, self.compare_away = comparator, compare_away
        self.evidence = evidence  # for routes with a rollout plan
        self.sink, self.metrics, self.resilience = sink, metrics, resilience
        self.max_pending = max_pending
        self.pending = 0  # comparisons handed to the worker and not yet back
        self.in_flight: dict[str, int] = {}
        self.noise: dict[str, set[str]] = {}  # route -> paths learned as noise
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
        """The shadow of this request, sent after the served side's head start. The served side fills
        `shadow.capture` and then calls `shadow.deliver()`, with why there is nothing to compare when
        that is so (client_gone, fallback). Little happens here, on the client's path: the shadow's
        own objects (its request record, both observations) are made in its task."""
        route = decision.route
        if self.in_flight.get(route.name, 0) >= route.parallel_run.max_in_flight:
            return self.skip(route, "busy")
        shadow = Shadow(self, decision, request, rid, head, body, Capture(route.parallel_run.max_body), pools)
        self.in_flight[route.name] = self.in_flight.get(route.name, 0) + 1
        shadow.head_start = request.loop.call_later(HEAD_START, shadow.go)
        return shadow

    def start(self, shadow: Shadow) -> None:
        """Send the shadow now, in a task of its own."""
        task = shadow.request.loop.create_task(shadow.run())
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

    def skip(self, route: Route, reason: str) -> None:
        self.metrics.shadows_skipped.labels(route.name, reason).inc()
        return None

    async def drain(self, timeout: float) -> None:
        """Send the shadows due, let running ones finish (up to `timeout`), then cancel the rest."""
        self._send_due()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Shadow:
    """One request's parallel run: waiting for its head start, then sent, compared and recorded."""

    __slots__ = ("runs", "decision", "request", "rid", "at", "head", "body", "capture", "pools", "head_start",
                 "gone", "delivered", "why_not", "waiting")

    def __init__(self, runs: Experiments, decision: Decision, request: EdgeRequest, rid: str, head: bytes,
                 body: bytes | None, capture: Capture, pools: Mapping[str, UpstreamPool]) -> None:
        self.runs, self.decision, self.request, self.rid, self.at = runs, decision, request, rid, time.time()
        self.head, self.body, self.capture, self.pools = head, body, capture, pools
        self.head_start: asyncio.TimerHandle | None = None
        self.gone = False  # sent
        self.delivered = False  # the served side is done: its answer is in `capture`, unless `why_not`
        self.why_not: str | None = None
        self.waiting: asyncio.Future[None] | None = None  # made only when the shadow is back first

    def record(self) -> RequestRecord:
        """The request, as the report shows it."""
        request = self.request
        return RequestRecord(self.rid, request.method, request.raw_path, tuple(request.headers.items()), self.body,
                             self.at)

    def go(self) -> None:
        """The served side has had its head start: send the shadow (once)."""
        if not self.gone:
            self.gone = True
            self.runs.start(self)

    def deliver(self, why_not: str | None = None) -> None:
        """The served side is done: its answer is in `capture`, or `why_not` says why there is none to
        compare (client_gone, fallback)."""
        if self.delivered:
            return
        self.delivered, self.why_not = True, why_not
        self.capture.seconds = time.monotonic() - self.capture.started
        if self.waiting is not None:
            self.waiting.set_result(None)
        if self.head_start is not None:
            self.head_start.cancel()
        if not self.gone:
            self.runs.after_answer(self)

    async def served(self) -> Observation | str:
        """The served side's answer, or why there is none to compare, once the served side is done."""
        if not self.delivered:
            self.waiting = self.request.loop.create_future()
            await self.waiting
        return self.why_not or self.capture.observation(self.decision.side)

    async def run(self) -> None:
        route = self.decision.route
        try:
            await self._run(route)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must never reach a client: count it and say it once
            self.runs.skip(route, "internal_error")
            log.exception("the parallel run of a request failed", extra={"route": route.name,
                                                                          "request_id": self.rid})
        finally:
            self.runs.in_flight[route.name] -= 1

    async def _run(self, route: Route) -> None:
        served_side = self.decision.side
        other = Side.NEW if served_side is Side.LEGACY else Side.LEGACY
        assert self.decision.shadow is not None
        if self.why_not is not None:
            return self.runs.skip(route, self.why_not)  # nothing to compare with: spare the upstream
        breaker = self.runs.resilience.breaker(self.decision.shadow)
        if not breaker.admit():
            return self.runs.skip(route, "breaker_open")  # evidence already counted; spare the upstream
        probing = route.compare.noise_probe > 0 and self.request.method in SAFE and \
            random.random() < route.compare.noise_probe
        shadow_call = self._call(self.decision.shadow.name, other)
        if probing:
            shadow, probe = await asyncio.gather(shadow_call, self._call(route.legacy.name, Side.LEGACY))
        else:
            shadow, probe = await shadow_call, None
        breaker.record(None if shadow.error == "busy" else shadow.error is None and shadow.status < 500)
        self.runs.metrics.tally.shadow(route.name, shadow.seconds)
        if route.rollout_plan is not None:
            self.runs.evidence.answered(route.name, other, shadow.status, shadow.error, shadow.seconds)
        served = await self.served()
        if isinstance(served, str):
            return self.runs.skip(route, served)
        if (served.body is None and served.error is None) or (shadow.body is None and shadow.error is None):
            return self.runs.skip(route, "body_too_large")
        legacy, new = (served, shadow) if served_side is Side.LEGACY else (shadow, served)
        if probe is not None:
            await self._learn_noise(route, legacy, probe)
        await self._compare(route, legacy, new)

    async def _call(self, upstream: str, side: Side) -> Observation:
        """The shadow exchange: whole answer read, up to the body cap, within the run's timeout."""
        pool, run = self.pools[upstream], self.decision.route.parallel_run
        started = time.monotonic()
        try:
            with Deadline(run.timeout, self.request.loop):
                async with pool.request(self.request.method, self.request.raw_path, self.head + SHADOW_MARK,
                                        self.body) as response:
                    body = await _read_capped(response, run.max_body)
                    headers = tuple(response.headers.items())
            return Observation(side, response.status, headers, body, time.monotonic() - started)
        except TimeoutError:
            return Observation(side, None, seconds=time.monotonic() - started, error="timeout")
        except UPSTREAM_ERRORS as exc:
            return Observation(side, None, seconds=time.monotonic() - started, error=pool.failure_from(exc).kind)

    async def _learn_noise(self, route: Route, legacy: Observation, again: Observation) -> None:
        comparison = await self._compared(route, legacy, again, CompareSpec())
        if comparison is None or comparison.matched:
            return
        paths = sorted({generalize(d.path) for d in comparison.differences})
        self.runs.noise.setdefault(route.name, set()).update(paths)
        self.runs.sink.learn_noise(route.name, paths, self.at)

    async def _compare(self, route: Route, legacy: Observation, new: Observation) -> None:
        comparison = await self._compared(route, legacy, new, route.compare)
        if comparison is None:
            return
        noise, real = _noise_and_real(comparison.differences, self.runs.noise.get(route.name, ()))
        self.runs.metrics.tally.comparison(route.name, "diverged" if real else "matched")
        self.runs.sink.count(route.name, bool(real), self.at)
        found = signature(route.name, real) if real else ""
        if route.rollout_plan is not None:
            self.runs.evidence.compared(route.name, found)
        if real:
            self.runs.sink.record(Divergence(route.name, self.record(), self.decision.side, legacy, new, real, noise,
                                             found))

    async def _compared(self, route: Route, legacy: Observation, new: Observation,
                        spec: CompareSpec) -> Comparison | None:
        """Identical answers match at once; small ones are compared here; large ones in the worker
        process, as long as fewer than `max_pending` wait there (else skipped and counted)."""
        if _identical(legacy, new, spec):
            return MATCHED
        if len(legacy.body or b"") + len(new.body or b"") <= INLINE_BYTES:
            return self.runs.comparator.compare(legacy, new, spec)
        if self.runs.pending >= self.runs.max_pending:
            return self.runs.skip(route, "compare_busy")
        self.runs.pending += 1
        try:
            return await self.runs.compare_away(legacy, new, spec)
        finally:
            self.runs.pending -= 1


def _identical(legacy: Observation, new: Observation, spec: CompareSpec) -> bool:
    """The same status, bytes and compared header lines: nothing to compare (the common case, when the
    new service is right). Lines that differ only in order are left to the comparator to judge."""
    if legacy.error or new.error or legacy.status != new.status or legacy.body != new.body:
        return False
    names = ("content-encoding", *spec.headers)
    return _lines(legacy, names) == _lines(new, names)


def _lines(observation: Observation, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The observation's header lines of these (lower-case) names, in order. (A loop: a comprehension
    with the lowered name bound in it took twice as long.)"""
    lines = []
    for name, value in observation.headers:
        if name.lower() in names:
            lines.append((name.lower(), value))
    return lines


def signature(route: str, differences: tuple[Difference, ...]) -> str:
    """What groups divergences: the route and the set of paths that differ (any list index alike)."""
    paths = sorted({generalize(d.path) for d in differences})
    return hashlib.sha256("\n".join([route, *paths]).encode()).hexdigest()[:12]


def _noise_and_real(differences: tuple[Difference, ...],
                    known: Collection[str]) -> tuple[tuple[Difference, ...], tuple[Difference, ...]]:
    """The differences at paths learned as noise, and the rest."""
    if not differences:
        return (), ()
    noise = tuple(d for d in differences if any(covers(n, d.path) for n in known))
    return noise, tuple(d for d in differences if d not in noise)


async def _read_capped(response: Any, limit: int) -> bytes | None:
    """The answer's body, or None when it is over `limit` (an answer that arrived whole: at once)."""
    if response.content.is_eof():
        body = response.content.read_nowait()
        return body if len(body) <= limit else None
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
