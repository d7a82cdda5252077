"""Rollout plans at work: each process gathers evidence, judges its plans, and follows the shared state.

Every tick the process hands its evidence to the store, then for each route with a plan
reads the shared state, judges the step when its check is due, and moves the plan when
the gates say so (a compare-and-set: of several workers, one moves it). The percent it
finds becomes the cap routing applies to the toggle (local provider); with the unleash
provider the process that moved the plan writes the step to Unleash as the feature's
rollout, so every instance follows. A move is logged with its reason and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from proxy.model import Config, Route, Serve
from proxy.model.evidence import PlanState, StepEvidence
from proxy.observe.metrics import Metrics
from proxy.rollout.evidence import Evidence
from proxy.rollout.gates import Judgement, judge
from reports.base import DivergenceSink, PlanStore
from toggles.base import Toggles

log = logging.getLogger("strangler.rollout")
TICK = 1.0  # seconds between evidence hand-overs and state reads


@dataclass(frozen=True, slots=True)
class PlanView:
    """A plan as /status and the CLI show it: where it stands and what the last judgement found."""

    state: PlanState
    percent: int  # in force: the state's percent under routes.yaml's ceiling, 0 unless serve: toggle
    judgement: Judgement
    step: StepEvidence
    recent: StepEvidence

    def as_json(self, route: Route) -> dict[str, Any]:
        plan = route.rollout_plan
        assert plan is not None
        return {"route": route.name, "percent": self.percent, "step": self.state.percent, "steps": list(plan.steps),
                "ceiling": route.ceiling, "since": self.state.since, "held": self.state.held,
                "hold_reason": self.state.reason or None, "next": self.judgement.action, "why": self.judgement.reason,
                "advance_gates": [c.as_json() for c in self.judgement.advance],
                "rollback_gates": [c.as_json() for c in self.judgement.rollback],
                "evidence": self.step.as_json(), "recent": self.recent.as_json()}


def in_force(route: Route, percent: int) -> int:
    """The percent users see: routes.yaml wins (serve: legacy or new pins the route; `rollout` caps)."""
    if route.serve is Serve.NEW:
        return 100
    if route.serve is not Serve.TOGGLE:
        return 0
    return min(percent, route.ceiling)


def view(store: PlanStore, route: Route, now: float) -> PlanView:
    """Read a plan's state and evidence, and judge it (blocking: a thread's)."""
    plan = route.rollout_plan
    assert plan is not None
    state = store.begin(route.name, plan.steps[0], now)
    accepted = store.accepted(now)
    step = store.evidence(route.name, state.since, now, accepted)
    recent = store.evidence(route.name, max(state.since, now - plan.window), now, accepted)
    percent = in_force(route, state.percent)
    judgement = judge(plan, state, step, recent, route.ceiling if route.serve is Serve.TOGGLE else percent)
    return PlanView(state, percent, judgement, step, recent)


class Rollouts:
    """One process's part in the rollout plans of its routes."""

    def __init__(self, store: PlanStore, sink: DivergenceSink | None, metrics: Metrics, config: Callable[[], Config],
                 toggles: Callable[[], Toggles], evidence: Evidence, act: bool = True) -> None:
        self.store, self.sink, self.metrics = store, sink, metrics
        self.config, self.toggles = config, toggles
        self.evidence = evidence
        self.act = act  # False: follow and show the plans, never move them (a supervisor)
        self.caps: dict[str, int] = {}  # route -> percent routing lets through the toggle (local provider)
        self.views: dict[str, PlanView] = {}
        self._judged: dict[str, float] = {}

    async def run(self) -> None:
        """Until cancelled: every TICK, hand over the evidence and follow (and move) the plans."""
        while True:
            await asyncio.sleep(TICK)
            await self.checked()

    async def checked(self) -> None:
        """One tick; the store failing is logged, never raised (plans stay where they were seen)."""
        try:
            await self.tick()
        except Exception:  # noqa: BLE001
            log.warning("rollout plans could not be checked", exc_info=True)

    def cap(self, route: Route) -> int | None:
        """The percent routing lets through this plan route's toggle: None when the toggle server
        applies the plan; the plan's first step until its state has been read (a route just added)."""
        if self._shared():
            return None
        assert route.rollout_plan is not None
        found = self.caps.get(route.name)
        return in_force(route, route.rollout_plan.steps[0]) if found is None else found

    def hand_over(self, now: float | None = None) -> None:
        """Give the store what this process gathered since the last time."""
        batch = self.evidence.take(time.time() if now is None else now)
        if batch is not None and self.sink is not None:
            self.sink.evidence(batch)

    async def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.hand_over(now)
        config = self.config()
        planned = [route for route in config.routes if route.rollout_plan is not None]
        for route in planned:
            await self._follow(route, now)
        self.caps = {route.name: self.views[route.name].percent for route in planned if route.name in self.views}

    async def _follow(self, route: Route, now: float) -> None:
        plan = route.rollout_plan
        assert plan is not None
        due = now - self._judged.get(route.name, 0.0) >= plan.check_interval
        seen = await asyncio.to_thread(view, self.store, route, now) if due else None
        if seen is None:
            state = await asyncio.to_thread(self.store.state, route.name)
            old = self.views.get(route.name)
            if state is not None and old is not None:
                self._show(route, PlanView(state, in_force(route, state.percent), old.judgement, old.step, old.recent))
            return
        self._judged[route.name] = now
        first = route.name not in self.views
        self._show(route, seen)
        if not self.act or route.serve is not Serve.TOGGLE:
            return
        if seen.judgement.to is not None:
            await self._move(route, seen, now)
        elif first and self._shared():
            await self.publish(route, seen.percent)  # the toggle server starts where the plan stands

    def _show(self, route: Route, view: PlanView) -> None:
        """Where the plan stands: what /status shows and what routing lets through change together."""
        self.views[route.name] = view
        self.caps[route.name] = view.percent
        self.metrics.rollout_percent.labels(route.name).set(view.percent)

    async def _move(self, route: Route, seen: PlanView, now: float) -> None:
        judgement = seen.judgement
        assert judgement.to is not None
        rollback = judgement.action == "rollback"
        evidence = {"step": seen.step.as_json(), "recent": seen.recent.as_json(),
                    "gates": [c.as_json() for c in (judgement.rollback if rollback else judgement.advance)]}
        moved = await asyncio.to_thread(self.store.move, seen.state, judgement.action, judgement.to,
                                        judgement.reason, "gates", now, evidence, True if rollback else None)
        if moved is None:
            return  # another process moved it first
        percent = in_force(route, moved.percent)
        self._show(route, PlanView(moved, percent, judgement, seen.step, seen.recent))
        self.metrics.rollout_moves.labels(route.name, judgement.action).inc()
        level = logging.WARNING if rollback else logging.INFO
        log.log(level, f"rollout plan {judgement.action}: {seen.state.percent}% -> {moved.percent}%",
                extra={"route": route.name, "reason": judgement.reason})
        await self.publish(route, percent)

    async def publish(self, route: Route, percent: int) -> None:
        """With a toggle server, write the percent as the toggle's rollout, for every instance."""
        assert route.toggle is not None
        try:
            await asyncio.to_thread(self.toggles().publish_rollout, route.toggle.name, percent)
        except Exception as exc:  # noqa: BLE001 - the state is kept; the next move writes again
            log.error("could not write the rollout to the toggle server",
                      extra={"route": route.name, "toggle": route.toggle.name, "problem": str(exc)})

    def _shared(self) -> bool:
        return self.toggles().shared_rollouts

    def status(self) -> list[dict[str, Any]]:
        routes = {route.name: route for route in self.config().routes if route.rollout_plan is not None}
        return [self.views[name].as_json(route) for name, route in routes.items() if name in self.views]
