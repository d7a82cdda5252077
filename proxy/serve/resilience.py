"""Failure kept local: a circuit breaker and a retry budget for each upstream.

The breaker opens after `failures` consecutive failures and then fails requests at once
(no connection tried) for `open_seconds`; after that it lets `probes` requests through
(half-open): a success closes it, a failure opens it again for twice as long, up to ten
times the base (Envoy's outlier ejection grows the same way). The budget lets retries be
at most a share of recent requests, so retries cannot multiply an outage.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from proxy.model import BreakerSpec, BreakerState, Upstream

log = logging.getLogger("strangler.resilience")
Clock = Callable[[], float]


class Breaker:
    """One upstream's circuit breaker: closed, open, or half-open while probes go through."""

    def __init__(self, upstream: str, spec: BreakerSpec, clock: Clock = time.monotonic,
                 on_change: Callable[[str, BreakerState], None] = lambda upstream, state: None) -> None:
        self.upstream, self.spec, self.clock, self.on_change = upstream, spec, clock, on_change
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened = 0  # times opened in a row, without a close between
        self.until = 0.0
        self.probing = 0

    def admit(self) -> bool:
        """Whether a request may go to the upstream now; a half-open breaker admits a few probes."""
        if self.state is BreakerState.OPEN and self.clock() >= self.until:
            self._become(BreakerState.HALF_OPEN)
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self.probing >= self.spec.probes):
            return False
        if self.state is BreakerState.HALF_OPEN:
            self.probing += 1
        return True

    def retry_after(self) -> int:
        """Whole seconds until a request may be tried again (for Retry-After)."""
        return max(1, int(self.until - self.clock() + 0.999)) if self.state is BreakerState.OPEN else 1

    def record(self, ok: bool | None) -> None:
        """The outcome of an admitted request; None when it says nothing about the upstream."""
        if self.state is BreakerState.HALF_OPEN:
            self.probing = max(0, self.probing - 1)
        if ok is None:
            return
        if ok:
            self.failures = 0
            if self.state is not BreakerState.CLOSED:
                self.opened = 0
                self._become(BreakerState.CLOSED)
            return
        self.failures += 1
        state = self.state
        if state is BreakerState.HALF_OPEN or (state is BreakerState.CLOSED and self.failures >= self.spec.failures):
            self._open()

    def _open(self) -> None:
        self.opened += 1
        self.until = self.clock() + min(self.spec.open_seconds * 2 ** (self.opened - 1), self.spec.open_seconds * 10)
        self._become(BreakerState.OPEN)

    def _become(self, state: BreakerState) -> None:
        before, self.state = self.state, state
        self.probing = 0 if state is not BreakerState.HALF_OPEN else self.probing
        level = logging.WARNING if state is BreakerState.OPEN else logging.INFO
        log.log(level, f"circuit breaker {before} -> {state}",
                extra={"upstream": self.upstream, "state": state, "failures": self.failures,
                       "retry_in": round(self.until - self.clock(), 1) if state is BreakerState.OPEN else None})
        self.on_change(self.upstream, state)


@dataclass
class RetryBudget:
    """Retries may be at most `share` of the requests of the last `window` seconds (and `minimum` always)."""

    share: float
    minimum: int = 3
    window: float = 10.0
    clock: Clock = time.monotonic
    requests: deque[float] = field(default_factory=deque)
    retries: deque[float] = field(default_factory=deque)

    def note_request(self) -> None:
        self.requests.append(self.clock())

    def room(self) -> bool:
        """Whether a retry would be allowed now."""
        now = self.clock()
        for times in (self.requests, self.retries):
            while times and times[0] < now - self.window:
                times.popleft()
        return len(self.retries) < max(self.minimum, self.share * len(self.requests))

    def spend(self) -> bool:
        """Take one retry from the budget; False when it is used up."""
        if not self.room():
            return False
        self.retries.append(self.clock())
        return True


class Resilience:
    """The breakers and budgets of all upstreams; they outlive reloads while an upstream's settings stay."""

    def __init__(self, on_change: Callable[[str, BreakerState], None] = lambda upstream, state: None,
                 clock: Clock = time.monotonic) -> None:
        self.on_change, self.clock = on_change, clock
        self._breakers: dict[str, tuple[Upstream, Breaker, RetryBudget]] = {}

    def breaker(self, upstream: Upstream) -> Breaker:
        held = self._breakers.get(upstream.name)
        if held is not None and held[0] is upstream:  # the usual: the same configuration's upstream as before
            return held[1]
        return self._for(upstream)[1]

    def budget(self, upstream: Upstream) -> RetryBudget:
        return self._for(upstream)[2]

    def states(self) -> dict[str, str]:
        return {name: breaker.state for name, (_, breaker, _) in self._breakers.items()}

    def _for(self, upstream: Upstream) -> tuple[Upstream, Breaker, RetryBudget]:
        held = self._breakers.get(upstream.name)
        if held is None or (held[0] is not upstream and held[0] != upstream):
            held = (upstream, Breaker(upstream.name, upstream.breaker, self.clock, self.on_change),
                    RetryBudget(upstream.retry_budget, clock=self.clock))
            self._breakers[upstream.name] = held
        return held
