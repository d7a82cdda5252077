"""The `routes:` list of routes.yaml -> Route values, with the checks that span routes.

Each entry is read field by field (problems collected, never the first one only); then
duplicate names are errors and routes shadowed by an earlier one are warnings.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from proxy.config.endpoints import read_endpoints
from proxy.config.fields import TOKEN, Reader, Section
from proxy.config.match import read_match, read_methods
from proxy.config.plans import check_plan, read_plan
from proxy.config.rewrite import read_rewrites
from proxy.model import CompareSpec, ParallelRun, Route, Serve, Side, Stickiness, StickinessKind, ToggleSpec, Upstream
from proxy.model.jsonpath import parse_path

ROUTE_KEYS = {"name", "match", "legacy", "new", "serve", "toggle", "fallback", "parallel_run", "compare", "retries",
              "rollout_plan", "websocket", "rewrite", "timeout", "endpoints"}
ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_routes(top: Section, upstreams: Mapping[str, Upstream], declared: set[str]) -> tuple[Route, ...]:
    """The routes; `declared` holds every upstream name written, valid or not (so a broken
    upstream is reported once, where it is defined, not again as unknown in each route)."""
    items = top.get("routes", "a list of routes", lambda v: isinstance(v, list))
    if not isinstance(items, list):
        return ()
    if not items:
        top.reader.warn(("routes",), "no routes: every request will get 404")
    _check_names(top.reader, items)
    indexed = [(i, _route(top.reader, i, item, upstreams, declared)) for i, item in enumerate(items)]
    found = [(i, route) for i, route in indexed if route is not None]
    _warn_unreachable(top.reader, found)
    return tuple(route for _, route in found)


def _route(reader: Reader, index: int, data: Any, upstreams: Mapping[str, Upstream],
           declared: set[str]) -> Route | None:
    written = data.get("name") if isinstance(data, dict) else None
    where = f"route '{written}'" if isinstance(written, str) else f"route #{index + 1}"
    sec = reader.section(("routes", index), data, where, ROUTE_KEYS)
    if sec is None:
        return None
    name = sec.text("name")
    if isinstance(name, str) and not ROUTE_NAME.match(name):
        sec.error("name", f"route name {name!r} may hold only letters, digits, '.', '_' and '-'")
    match = read_match(sec)
    legacy = _upstream_ref(sec, "legacy", upstreams, declared, required=True)
    new = _upstream_ref(sec, "new", upstreams, declared, required=False)
    serve = _choice(sec, "serve", Serve, Serve.LEGACY)
    fallback = _choice(sec, "fallback", Side, None, only=(Side.LEGACY,))
    legacy_rewrite, new_rewrite = read_rewrites(sec, match, {Side.LEGACY: legacy, Side.NEW: new})
    route = Route(name=name, match=match, legacy=legacy, new=new, serve=serve,
                  toggle=_toggle(sec), fallback=fallback, parallel_run=_parallel_run(sec),
                  compare=_compare(sec), retries=sec.integer("retries", 0, 0, 10), rollout_plan=read_plan(sec),
                  websocket=sec.flag("websocket", True), legacy_rewrite=legacy_rewrite, new_rewrite=new_rewrite,
                  timeout=_timeout(sec), endpoints=read_endpoints(sec, match), line=reader.doc.line(sec.path))
    _check_sides(sec, route)
    check_plan(sec, route)
    return route if isinstance(name, str) and match and legacy else None


def _check_sides(sec: Section, route: Route) -> None:
    needs_new = [why for why, needed in (
        (f"serve: {route.serve}", route.serve is not Serve.LEGACY),
        ("fallback", route.fallback is not None),
        ("parallel_run", route.parallel_run.enabled)) if needed]
    if route.new is None and needs_new and not sec.has("new"):
        sec.error("serve", f"'new' (the extracted service's upstream) is required with {needs_new[0]}")
    if route.serve is Serve.TOGGLE and route.toggle is None and not sec.has("toggle"):
        sec.error("serve", "serve: toggle needs a 'toggle:' block (name, rollout, stickiness)")


def _timeout(sec: Section) -> float | None:
    timeout = sec.get("timeout", "a number of seconds", lambda v: isinstance(v, (int, float)) and
                      not isinstance(v, bool), None)
    if timeout is not None and timeout <= 0:
        sec.error("timeout", f"'timeout' must be above 0 seconds, got {timeout} (leave it out to use the "
                             "upstream's timeout)")
        return None
    return float(timeout) if timeout is not None else None


def _upstream_ref(sec: Section, key: str, upstreams: Mapping[str, Upstream], declared: set[str],
                  required: bool) -> Upstream | None:
    name = sec.text(key) if required else sec.text(key, None)
    if not isinstance(name, str):
        return None
    if name not in upstreams and name not in declared:
        known = ", ".join(sorted(upstreams)) or "none defined"
        sec.error(key, f"unknown upstream '{name}' (known: {known})")
    return upstreams.get(name)


def _choice(sec: Section, key: str, kind: Any, default: Any, only: tuple = ()) -> Any:
    value = sec.text(key, None)
    allowed = only or tuple(kind)
    if value is None:
        return default
    if value not in {str(a) for a in allowed}:
        sec.error(key, f"'{key}' must be {' or '.join(str(a) for a in allowed)}, got {value!r}")
        return default
    return kind(value)


def _toggle(route: Section) -> ToggleSpec | None:
    sec = route.section("toggle", {"name", "rollout", "stickiness"})
    if sec is None:
        return None
    name = sec.text("name")
    rollout = sec.integer("rollout", None, 0, 100)
    stickiness = _stickiness(sec)
    if not isinstance(name, str) or stickiness is None:
        return None
    return ToggleSpec(name, rollout, stickiness)


def _stickiness(sec: Section) -> Stickiness | None:
    text = sec.text("stickiness")
    if not isinstance(text, str):
        return None
    kind, _, name = text.partition(":")
    if (kind in ("ip", "random") and not name) or (kind in ("header", "cookie") and TOKEN.match(name)):
        return Stickiness(StickinessKind(kind), name)
    sec.error("stickiness", f"'stickiness' must be header:NAME, cookie:NAME, ip or random, got {text!r}")
    return None


def _parallel_run(route: Section) -> ParallelRun:
    sec = route.section("parallel_run", {"enabled", "sample", "methods", "timeout", "max_in_flight", "max_body"})
    if sec is None:
        return ParallelRun()
    default = ParallelRun()
    return ParallelRun(enabled=sec.flag("enabled", True),
                       sample=sec.number("sample", 1.0, low=0, high=1),
                       methods=read_methods(sec, "methods", default.methods) or default.methods,
                       timeout=sec.number("timeout", default.timeout, positive=True),
                       max_in_flight=sec.integer("max_in_flight", default.max_in_flight, 1, 100_000),
                       max_body=sec.integer("max_body", default.max_body, 0, 1 << 30))


def _compare(route: Section) -> CompareSpec:
    sec = route.section("compare", {"ignore_paths", "ignore_order", "float_tolerance", "headers", "noise_probe"})
    if sec is None:
        return CompareSpec()
    ignore_paths = sec.texts("ignore_paths")
    for path in ignore_paths:
        if not parse_path(path):  # also refuses `$` alone: that would ignore the whole body
            sec.error("ignore_paths", f"{path!r} is not a body path like $.updated_at, $.items[*].etag "
                                      "or $['a.b']")
    headers = sec.texts("headers")
    for name in headers:
        if not TOKEN.match(name):
            sec.error("headers", f"{name!r} is not a valid header name")
    return CompareSpec(ignore_paths=ignore_paths,
                       ignore_order=sec.flag("ignore_order", False),
                       float_tolerance=sec.number("float_tolerance", 0.0, low=0),
                       headers=tuple(h.lower() for h in headers),
                       noise_probe=sec.number("noise_probe", 0.0, low=0, high=1))


def _check_names(reader: Reader, items: list[Any]) -> None:
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        line = reader.doc.line(("routes", i, "name"))
        if name in first:
            reader.error(("routes", i, "name"), f"duplicate route name '{name}' (first at line {first[name]})")
        first.setdefault(name, line)


def _warn_unreachable(reader: Reader, routes: list[tuple[int, Route]]) -> None:
    """A route that an earlier one covers: only a route whose path is a segment prefix of its own can, so
    each route is held against the earlier routes at each of its path's prefixes, not against every
    earlier route (a file of a thousand routes would make that half a million comparisons)."""
    earlier_at: dict[str, list[tuple[int, Route]]] = {}  # match.path -> the routes so far with it, in order
    for n, (i, route) in enumerate(routes):
        covering = [(m, r) for prefix in _prefixes(route.match.path) for m, r in earlier_at.get(prefix, ())
                    if r.match.covers(route.match)]
        earlier_at.setdefault(route.match.path, []).append((n, route))
        if covering:
            earlier = min(covering, key=lambda found: found[0])[1]
            reader.warn(("routes", i), f"route '{route.name}' is unreachable: route '{earlier.name}' "
                                       f"(line {earlier.line}) matches every request it would{_hosts(earlier, route)}")


def _prefixes(path: str) -> list[str]:
    """`/api/orders` -> ['/', '/api', '/api/orders']: the paths that are segment prefixes of it."""
    segments = path.split("/")[1:] if path != "/" else []
    return ["/"] + ["/" + "/".join(segments[:end]) for end in range(1, len(segments) + 1)]


def _hosts(earlier: Route, hidden: Route) -> str:
    """Why a host route is hidden, in words: the host rule that takes its host."""
    if hidden.match.host is None:
        return ""
    if earlier.match.host is None:
        return f", on any host (host {hidden.match.host} among them)"
    return f" (host {earlier.match.host} takes {hidden.match.host})"
