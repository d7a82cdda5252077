"""The parallel run: the other side gets the same request at the same time; both answers are compared.

Nothing here changes, slows or fails the client's answer. The served exchange has a
head start of at most HEAD_START: the shadow is sent AFTER_ANSWER after the client has
its answer, or when the head start is over, whichever comes first. With a quick upstream
the shadow's own work (a request written, an answer parsed) then comes once the proxy
has been idle, not in front of the answer nor right behind it; with a slow one both
sides are in flight together. Each shadow (proxy.shadow.shadow) goes on a pool of its
own, under its own timeout; when too many are in flight it is skipped, not queued, and
counted.
"""

from __future__ import annotations

import asyncio
import random
from typing import Mapping

from proxy.model import Decision, RequestFacts, Route, SkipReason
from proxy.observe.metrics import Metrics
from proxy.rollout.evidence import Evidence
from proxy.routing.stickiness import sticky_value
from proxy.shadow.compare import Comparer
from proxy.shadow.shadow import Breakers, Shadow
from proxy.wire.pool import UpstreamPool
from proxy.wire.request import EdgeRequest
from toggles.base import Toggles

# Long enough for a quick upstream's answer to reach the client first; short enough that the two
# sides still see the request at the same moment as far as any comparison can tell. Shadows begun
# by then leave together, on one timer.
HEAD_START = 0.001
# Once the client has its answer, the shadow waits this long: the proxy goes idle first, and whoever
# the answer woke runs before the shadow's work (sent at once, that work raised the client's p50:
# docs/performance.md). Two milliseconds, as uvloop's timers count whole milliseconds of a clock
# read once per loop turn. Shadows due by then leave together, on one timer.
AFTER_ANSWER = 0.002


class ParallelRun:
    """Every request's parallel run: which are in its sample, when each shadow leaves, and what becomes of it."""

    def __init__(self, comparer: Comparer, metrics: Metrics, breakers: Breakers, evidence: Evidence) -> None:
        self.comparer, self.metrics, self.breakers, self.evidence = comparer, metrics, breakers, evidence
        self.in_flight: dict[str, int] = {}  # route -> shadows begun and not done
        self._active: set[Shadow] = set()  # the same shadows, for a drain
        self._starting: list[Shadow] = []  # within their head start
        self._due: list[Shadow] = []  # answered, waiting for AFTER_ANSWER
        self._drained: asyncio.Future[None] | None = None  # a drain waiting for the last shadow

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
        self._active.add(shadow)
        self._starting.append(shadow)
        if len(self._starting) == 1:
            request.loop.call_later(HEAD_START, self._head_start_over)
        return shadow

    def skip(self, route: Route, reason: SkipReason) -> None:
        self.metrics.shadows_skipped.labels(route.name, reason).inc()
        return None

    def after_answer(self, shadow: Shadow) -> None:
        """Send the shadow AFTER_ANSWER from now, with any others due by then."""
        self._due.append(shadow)
        if len(self._due) == 1:
            shadow.request.loop.call_later(AFTER_ANSWER, self._send_due)

    def ended(self, shadow: Shadow, reason: SkipReason | None) -> None:
        """A shadow is done with: compared, or skipped for `reason`, or given up on."""
        route = shadow.decision.route
        self.in_flight[route.name] -= 1
        self._active.discard(shadow)
        if reason is not None:
            self.skip(route, reason)
        shadow.span.end()
        if not self._active and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _head_start_over(self) -> None:
        starting, self._starting = self._starting, []
        for shadow in starting:
            shadow.go()

    def _send_due(self) -> None:
        due, self._due = self._due, []
        for shadow in due:
            shadow.go()

    async def drain(self, timeout: float) -> None:
        """Send the shadows waiting to leave, let those in flight finish (up to `timeout`), then give up on
        the rest."""
        self._send_due()
        self._head_start_over()
        if self._active:
            self._drained = asyncio.get_running_loop().create_future()
            await asyncio.wait({self._drained}, timeout=timeout)
        for shadow in list(self._active):
            shadow.cancel()
