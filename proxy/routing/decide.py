"""Which route takes a request (first match in file order) and which side answers it."""

from __future__ import annotations

import random
from typing import Mapping

from proxy.model import Decision, RequestFacts, Route, Serve, Side, ToggleCheck, Upstream, Verdict
from proxy.model.hosts import host_matches, request_host
from proxy.routing.stickiness import toggle_context
from toggles.base import Toggles


class FixedDecisions:
    """One generation's decisions for the routes no toggle decides: the same for every user, so each is
    made once, with the shadow (for the methods the route's parallel run takes) and without."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._both = {route.name: _both(route, _side(route, None))
                      for route in routes if route.serve is not Serve.TOGGLE}

    def get(self, route: Route, method: str) -> Decision | None:
        """The decision for this request when it is the same for every user; None: ask `decide`."""
        both = self._both.get(route.name)
        return None if both is None else both[method in route.parallel_run.methods]


def _both(route: Route, side: Side) -> tuple[Decision, Decision]:
    return _decision(route, side, False), _decision(route, side, True)


def match_route(routes: tuple[Route, ...], method: str, path: str,
                headers: Mapping[str, str]) -> Route | None:
    """The first route whose match takes this request, or None. The Host header is read (and
    normalised, once) only when a host route takes the request otherwise: most files have none, and
    then the scan costs what it did before hosts."""
    host, read = None, False
    for route in routes:
        match = route.match
        if match.matches_but_host(method, path, headers):
            if match.host is None:
                return route
            if not read:
                host, read = request_host(headers.get("Host")), True
            if host_matches(match.host, host):
                return route
    return None


def decide(route: Route, facts: RequestFacts, toggles: Toggles, cap: int | None = None) -> Decision:
    """Who serves this request, who (if anyone) is shadowed, and the toggle's say in it. `cap`: the
    percent of users a rollout plan lets the toggle move (None: no plan, or the toggle server applies it)."""
    check = _ask_toggle(route, facts, toggles) if route.serve is Serve.TOGGLE else None
    if cap is not None and check is not None and check.verdict is Verdict.ON and not _in_plan(route, check, cap, toggles):
        check = check._replace(verdict=Verdict.OFF, plan=cap)
    return _decision(route, _side(route, check), facts.method in route.parallel_run.methods, check)


def _side(route: Route, check: ToggleCheck | None) -> Side:
    if route.serve is Serve.NEW or (check is not None and check.verdict is Verdict.ON):
        return Side.NEW
    return Side.LEGACY


def _decision(route: Route, side: Side, shadowed: bool, check: ToggleCheck | None = None) -> Decision:
    """`side` serves; the other sees the request too when it is one the parallel run takes (`shadowed`)."""
    upstream = route.upstream(side)
    assert upstream is not None  # config guarantees `new` wherever serve can pick it
    return Decision(route, side, upstream, _shadow(route, side) if shadowed else None, check)


def _ask_toggle(route: Route, facts: RequestFacts, toggles: Toggles) -> ToggleCheck:
    assert route.toggle is not None
    context, sticky = toggle_context(route.toggle.stickiness, facts)
    return ToggleCheck(route.toggle.name, toggles.verdict(route.toggle.name, context), sticky)


def _in_plan(route: Route, check: ToggleCheck, cap: int, toggles: Toggles) -> bool:
    """Whether this user is within the plan's percent: the toggle's own hash, so the users of a
    5% step are among those of the 25% step after it. Without a sticky value (random stickiness)
    the toggle already let `ceiling` percent through: of those, cap/ceiling."""
    if check.sticky is None:
        return random.random() * route.ceiling < cap
    return toggles.bucket(check.name, check.sticky) <= cap


def _shadow(route: Route, served: Side) -> Upstream | None:
    run = route.parallel_run
    if not run.enabled or run.sample <= 0:
        return None
    return route.upstream(Side.NEW if served is Side.LEGACY else Side.LEGACY)
