"""Rollout plans at work: each process gathers evidence, judges its plans, and follows the shared state.

Every tick the process hands its evidence to the store, then for each route with a plan
reads the shared state, judges the step when its check is due, and moves the plan when
the gates say so (a compare-and-set: of several workers or instances, one moves it). The
percent it finds becomes the cap routing applies to the toggle (local provider); with the
unleash provider the process that moved the plan writes the step to Unleash as the
feature's rollout, and every process that finds Unleash behind the plan polls it at once,
so every instance follows within a tick. A move is logged with its reason and counted.

Evidence missing means no verdict: while this process's evidence waits for the store (down
or lagging), or the store cannot be read, plans hold where they were last seen, and say why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from proxy.model import Config, Route, Serve, StoreState
from proxy.model.errors import one_line
from proxy.model.evidence import PlanState, StepEvidence
from proxy.observe.metrics import Metrics
from proxy.rollout.evidence import Evidence
from proxy.rollout.gates import Judgement, judge
from reports.base import DivergenceSink, PlanStore
from toggles.base import Toggles

log = logging.getLogger("strangler.rollout")
TICK = 1.0  # seconds between evidence hand-overs and state reads
CATCH_UP, CATCH_UP_FOR = 0.25, 10.0  # seconds between polls of a toggle server behind its plan, and for how long


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
        self._unread: str | None = None  # why the store cannot be read, while it cannot
        self._catching_up: dict[str, asyncio.Task[None]] = {}  # route -> polling the toggle server

    async def run(self) -> None:
        """Until cancelled: every TICK, hand over the evidence and follow (and move) the plans."""
        try:
            while True:
                await asyncio.sleep(TICK)
                await self.checked()
        finally:
            for task in self._catching_up.values():
                task.cancel()

    async def checked(self) -> None:
        """One tick; the store failing is logged once an outage, never raised (plans stay where they
        were seen, and say that their evidence is missing)."""
        try:
            await self.tick()
        except Exception as exc:  # noqa: BLE001
            if self._unread is None:
                log.error("rollout plans cannot read the store; every plan holds where it stands",
                          extra={"problem": one_line(exc)})
            self._unread = f"evidence missing: the store cannot be read ({one_line(exc)})"
            self._hold_all(self._unread)
            return
        if self._unread is not None:
            log.info("rollout plans read the store again")
            self._unread = None

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
        if self.sink is not None and self.sink.health.state is StoreState.DOWN:
            self._hold_all(self._missing())  # nothing to read either: the plans stay as last seen
            return
        config = self.config()
        planned = [route for route in config.routes if route.rollout_plan is not None]
        for route in planned:
            await self._follow(route, now)
        self.caps = {route.name: self.views[route.name].percent for route in planned if route.name in self.views}

    async def _follow(self, route: Route, now: float) -> None:
        plan = route.rollout_plan
        assert plan is not None
        missing = self._missing()
        due = now - self._judged.get(route.name, 0.0) >= plan.check_interval and missing is None
        seen = await asyncio.to_thread(view, self.store, route, now) if due else None
        if seen is None:
            state = await asyncio.to_thread(self.store.state, route.name)
            old = self.views.get(route.name)
            if state is not None and old is not None:
                judgement = old.judgement if missing is None else Judgement("stay", None, missing)
                self._show(route, PlanView(state, in_force(route, state.percent), judgement, old.step, old.recent))
                self._catch_up(route)
            return
        self._judged[route.name] = now
        first = route.name not in self.views
        self._show(route, seen)
        self._catch_up(route)
        if not self.act or route.serve is not Serve.TOGGLE:
            return
        if seen.judgement.to is not None:
            await self._move(route, seen, now)
        elif first and self._shared():
            await self.publish(route, seen.percent)  # the toggle server starts where the plan stands

    def _missing(self) -> str | None:
        """Why this process's evidence is not all in the store (None: it is)."""
        state = None if self.sink is None else self.sink.health.state
        if state is StoreState.DOWN:
            down = datetime.fromtimestamp(self.sink.health.down_since, timezone.utc).isoformat(timespec="seconds")
            return f"evidence missing: the store is down since {down} ({self.sink.health.problem})"
        if state is StoreState.LAGGING:
            return "evidence missing: this instance's evidence is waiting to be written (the store is lagging)"
        return None

    def _hold_all(self, why: str) -> None:
        """Every plan stays where it was last seen, its verdict replaced by `why`."""
        for name, old in self.views.items():
            self.views[name] = PlanView(old.state, old.percent, Judgement("stay", None, why), old.step, old.recent)

    def _catch_up(self, route: Route) -> None:
        """With a toggle server whose rollout is not the plan's, poll it every CATCH_UP seconds until it
        is (up to CATCH_UP_FOR): a move, made here or by another instance, reaches this instance's
        routing as soon as the server has it, not at the next regular poll."""
        if not self._shared() or route.toggle is None or route.serve is not Serve.TOGGLE:
            return
        running = self._catching_up.get(route.name)
        if running is None or running.done():
            name, percent = route.toggle.name, self.views[route.name].percent
            if self.toggles().rollout_of(name) != percent:
                self._catching_up[route.name] = asyncio.create_task(self._poll(name, percent))

    async def _poll(self, name: str, percent: int) -> None:
        for _ in range(int(CATCH_UP_FOR / CATCH_UP)):
            toggles = self.toggles()
            toggles.refresh()
            await asyncio.sleep(CATCH_UP)
            if toggles.rollout_of(name) == percent:
                return

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
        self._catch_up(route)  # this instance's own routing, as soon as the server has the step

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
