"""A route's `rollout_plan:` -> RolloutPlan: the steps, and the gates for advancing and rolling back.

A gate left out keeps its default; `null` switches it off. The plan needs a toggle route
with a parallel run: the toggle is what a step moves, the comparisons are the evidence.
"""

from __future__ import annotations

from dataclasses import fields, replace
from itertools import pairwise

from proxy.config.fields import Section
from proxy.model import Gates, RolloutPlan, Route, Serve

PLAN_KEYS = {"steps", "advance", "rollback", "check_interval"}
GATE_KEYS = {f.name for f in fields(Gates)}
ROLLBACK_KEYS = GATE_KEYS - {"min_seconds"} | {"window", "to"}
RATES = ("max_divergence_rate", "max_error_rate")


def read_plan(route: Section) -> RolloutPlan | None:
    sec = route.section("rollout_plan", PLAN_KEYS)
    if sec is None:
        return None
    default = RolloutPlan()
    plan = RolloutPlan(steps=_steps(sec, default.steps),
                       advance=_gates(sec.section("advance", GATE_KEYS), default.advance),
                       check_interval=sec.number("check_interval", default.check_interval, positive=True))
    rollback = sec.section("rollback", ROLLBACK_KEYS)
    if rollback is None:
        return plan
    to = rollback.text("to", default.rollback_to)
    if to not in ("previous", "legacy"):
        rollback.error("to", f"'to' must be previous or legacy, got {to!r}")
        to = default.rollback_to
    return replace(plan, rollback=_gates(rollback, default.rollback), rollback_to=to,
                   window=rollback.number("window", default.window, positive=True))


def check_plan(sec: Section, route: Route) -> None:
    """What a plan needs from its route: comparisons to judge by, and a toggle to move."""
    if route.rollout_plan is None:
        return
    if not route.parallel_run.enabled:
        sec.error("rollout_plan", "a rollout_plan needs parallel_run (enabled: true): its gates judge "
                                  "the comparisons")
    if route.serve is not Serve.TOGGLE:
        sec.reader.warn(sec.at("serve"), f"{sec.where}: the rollout_plan is paused while serve is "
                                         f"{route.serve} (routes.yaml wins); serve: toggle lets it move users")


def _steps(sec: Section, default: tuple[int, ...]) -> tuple[int, ...]:
    written = sec.get("steps", "a list of whole percents, like [0, 1, 5, 25, 50, 100]",
                      lambda v: isinstance(v, list) and bool(v), None)
    if written is None:
        return default
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100 for v in written):
        sec.error("steps", f"'steps' must be whole percents from 0 to 100, got {written}")
        return default
    if any(a >= b for a, b in pairwise(written)):
        sec.error("steps", f"'steps' must go up, each above the one before, got {written}")
        return default
    return tuple(written)


def _gates(sec: Section | None, default: Gates) -> Gates:
    if sec is None:
        return default
    values = {}
    for name in sorted(GATE_KEYS & set(sec.data)):
        if sec.data[name] is None:  # `null`: this gate is off
            values[name] = None if name.startswith("max_") else 0
        elif name == "min_comparisons":
            values[name] = sec.integer(name, default.min_comparisons, 0, 10_000_000)
        elif name in RATES:
            values[name] = sec.number(name, getattr(default, name), low=0, high=1)
        else:
            values[name] = sec.number(name, getattr(default, name), low=0)
    return replace(default, **values)
