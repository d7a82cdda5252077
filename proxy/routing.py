"""Which route takes a request (first match in file order) and which side answers it."""

from __future__ import annotations

from typing import Any, Mapping

from proxy.model import Decision, Route, Serve, Side
from toggles.base import Toggles


def match_route(routes: tuple[Route, ...], method: str, path: str,
                headers: Mapping[str, str]) -> Route | None:
    """The first route whose match takes this request, or None."""
    for route in routes:
        if route.match.matches(method, path, headers):
            return route
    return None


def decide(route: Route, method: str, toggles: Toggles, context: Mapping[str, Any]) -> Decision:
    """Who serves this request, who (if anyone) is shadowed, and why, in words."""
    side, reason = _side(route, toggles, context)
    upstream = route.upstream(side)
    assert upstream is not None  # config guarantees `new` wherever serve can pick it
    return Decision(route, side, upstream, _shadow(route, side, method), reason)


def _side(route: Route, toggles: Toggles, context: Mapping[str, Any]) -> tuple[Side, str]:
    if route.serve is Serve.LEGACY:
        return Side.LEGACY, "serve: legacy"
    if route.serve is Serve.NEW:
        return Side.NEW, "serve: new"
    assert route.toggle is not None
    name = route.toggle.name
    if toggles.is_enabled(name, context):
        return Side.NEW, f"toggle {name} is on for this request"
    return Side.LEGACY, f"toggle {name} is off for this request"


def _shadow(route: Route, served: Side, method: str):
    run = route.parallel_run
    if not run.enabled or run.sample <= 0 or method not in run.methods:
        return None
    return route.upstream(Side.NEW if served is Side.LEGACY else Side.LEGACY)
