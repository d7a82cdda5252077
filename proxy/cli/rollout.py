"""`strangler rollout status | advance | hold | resume | rollback ROUTE`: rollout plans, by hand.

The commands read and move the plan's state in the divergence database, where running
proxies (every worker) pick it up within a second; with the unleash provider a move is
also written to Unleash as the toggle's rollout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone

from proxy import config as config_file
from proxy import steer
from proxy.model import Config, Route
from proxy.model.errors import ConfigError, one_line
from proxy.rollout.plans import PlanView, in_force, view
from reports.db import STORE_ERRORS, Where
from reports.plans import StorePlans, operator

EXIT_OK, EXIT_REFUSED, EXIT_UNKNOWN = 0, 1, 3


def status(args: argparse.Namespace) -> int:
    found = _plans(args, args.route)
    if found is None:
        return EXIT_UNKNOWN
    config, routes = found
    store = StorePlans(Where.of(config.reports))
    try:
        seen = [(route, view(store, route, time.time())) for route in routes]
    except STORE_ERRORS as exc:
        print(f"strangler rollout: evidence missing: the store at {store.connections.where} cannot be read "
              f"({one_line(exc)}); no plan moves until it can", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps({"rollouts": [v.as_json(route) for route, v in seen]}))
    else:
        print("\n\n".join(describe(route, v) for route, v in seen) or "no route has a rollout_plan")
    return EXIT_OK


def describe(route: Route, seen: PlanView) -> str:
    plan, state = route.rollout_plan, seen.state
    assert plan is not None
    steps = " ".join(f"[{s}%]" if s == state.percent else f"{s}%" for s in plan.steps)
    lines = [f"{route.name}: {seen.percent}% of users on the new side   steps {steps}",
             f"  since {_when(state.since)}" + (f", HELD: {state.reason}" if state.held else ""),
             f"  next: {seen.judgement.action} - {seen.judgement.reason}",
             f"  evidence: {seen.step.compared} compared, {seen.step.diverged} diverged "
             f"({seen.step.accepted} more accepted), new side {seen.step.new.errors} failed of "
             f"{seen.step.new.answers}"]
    lines += ["  advance gates (the whole step):"]
    lines += [f"    {'ok' if c.ok else 'waiting':<9} {c}" for c in seen.judgement.advance]
    lines += [f"  rollback gates (the last {plan.window:g} s):"]
    lines += [f"    {'ok' if c.ok else 'BREACHED':<9} {c}" for c in seen.judgement.rollback]
    return "\n".join(lines)


def advance(args: argparse.Namespace) -> int:
    return _move(args, "advance")


def hold(args: argparse.Namespace) -> int:
    return _move(args, "hold")


def resume(args: argparse.Namespace) -> int:
    return _move(args, "resume")


def rollback(args: argparse.Namespace) -> int:
    return _move(args, "rollback")


def _move(args: argparse.Namespace, action: str) -> int:
    found = _plans(args, args.route)
    if found is None:
        return EXIT_UNKNOWN
    config, (route,) = found
    by = (args.by or "").strip() or operator()
    try:
        done = steer.move(config, route.name, action, args.reason, f"manual:{by}",
                          to_legacy=getattr(args, "to", "previous") == "legacy")
    except steer.Refused as exc:
        print(f"strangler rollout: {route.name}: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    print(done.message)
    if done.warning:
        print(f"strangler rollout: {done.warning}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def plan_caps(config: Config) -> dict[str, int]:
    """The percent each plan stands at, as running proxies apply it (for `strangler explain`); a plan
    with no state yet stands at its first step."""
    planned = [route for route in config.routes if route.rollout_plan is not None]
    states: dict[str, int] = {}
    if planned and Where.of(config.reports).present:
        store = StorePlans(Where.of(config.reports))
        try:
            states = {state.route: state.percent for state in store.states()}
        finally:
            store.close()
    return {route.name: in_force(route, states.get(route.name, route.rollout_plan.steps[0])) for route in planned}


def _plans(args: argparse.Namespace, name: str | None) -> tuple[Config, list[Route]] | None:
    try:
        config = config_file.load(args.config)
    except ConfigError as exc:
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        return None
    routes = [r for r in config.routes if r.rollout_plan is not None and (name is None or r.name == name)]
    if name is not None and not routes:
        planned = ", ".join(r.name for r in config.routes if r.rollout_plan is not None) or "none"
        print(f"strangler rollout: no route {name!r} with a rollout_plan (routes with one: {planned})",
              file=sys.stderr)
        return None
    return config, routes


def _when(ts: float) -> str:
    at = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
    return f"{at} ({_age(time.time() - ts)} ago)"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
