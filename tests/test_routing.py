"""Route matching (segment prefix, methods, headers, first match wins) and the serve decision."""

import pytest
from multidict import CIMultiDict

from proxy.model import Match, ParallelRun, RequestFacts, Route, Serve, Side, Stickiness, ToggleSpec, Upstream, Verdict
from proxy.routing.decide import decide, match_route

MONOLITH = Upstream("monolith", "http://127.0.0.1:9001")
ORDERS = Upstream("orders", "http://127.0.0.1:9002")


def make(name: str, path: str, methods=None, headers=(), **more) -> Route:
    return Route(name, Match(path, frozenset(methods) if methods else None, tuple(headers)), MONOLITH, **more)


@pytest.mark.parametrize("prefix, path, matches", [
    ("/api/orders", "/api/orders", True),
    ("/api/orders", "/api/orders/7", True),
    ("/api/orders", "/api/orders/", True),
    ("/api/orders", "/api/ordersX", False),
    ("/api/orders", "/api", False),
    ("/api/orders", "/API/orders", False),
    ("/", "/anything/at/all", True),
])
def test_path_matches_by_whole_segments(prefix, path, matches):
    assert Match(prefix).matches("GET", path, {}) is matches


def test_methods_and_header_values_must_all_match():
    match = Match("/api", frozenset({"GET"}), (("x-beta", "1"),))
    assert match.matches("GET", "/api", CIMultiDict({"X-Beta": "1"}))
    assert not match.matches("POST", "/api", CIMultiDict({"X-Beta": "1"}))
    assert not match.matches("GET", "/api", CIMultiDict({"X-Beta": "2"}))
    assert not match.matches("GET", "/api", CIMultiDict())


def test_first_match_in_file_order_wins():
    routes = (make("beta", "/api", headers=[("x-beta", "1")]), make("api", "/api"), make("all", "/"))
    assert match_route(routes, "GET", "/api/x", CIMultiDict({"X-Beta": "1"})).name == "beta"
    assert match_route(routes, "GET", "/api/x", CIMultiDict()).name == "api"
    assert match_route(routes, "GET", "/other", CIMultiDict()).name == "all"
    assert match_route(routes[:2], "GET", "/other", CIMultiDict()) is None


@pytest.mark.parametrize("earlier, later, covered", [
    (Match("/"), Match("/api"), True),
    (Match("/api"), Match("/api/orders", frozenset({"GET"})), True),
    (Match("/api", frozenset({"GET"})), Match("/api"), False),
    (Match("/api", frozenset({"GET", "POST"})), Match("/api/x", frozenset({"GET"})), True),
    (Match("/api", headers=(("x-beta", "1"),)), Match("/api"), False),
    (Match("/api"), Match("/api", headers=(("x-beta", "1"),)), True),
    (Match("/api/orders"), Match("/api/ordersX"), False),
])
def test_covers_says_when_an_earlier_route_hides_a_later_one(earlier, later, covered):
    assert earlier.covers(later) is covered


class Fixed:
    """A toggle provider that says the same thing for everyone."""

    def __init__(self, verdict: Verdict) -> None:
        self.said = verdict
        self.asked: list[tuple[str, dict]] = []

    def verdict(self, name, context):
        self.asked.append((name, context))
        return self.said


def facts(method="GET", path="/api", headers=None, remote="192.0.2.9") -> RequestFacts:
    return RequestFacts(method, path, CIMultiDict(headers or {}), remote)


TOGGLE = ToggleSpec("orders-to-new", 50, Stickiness("header", "X-User-Id"))


@pytest.mark.parametrize("serve, verdict, side", [
    (Serve.LEGACY, Verdict.ON, Side.LEGACY),
    (Serve.NEW, Verdict.OFF, Side.NEW),
    (Serve.TOGGLE, Verdict.ON, Side.NEW),
    (Serve.TOGGLE, Verdict.OFF, Side.LEGACY),
    (Serve.TOGGLE, Verdict.UNKNOWN, Side.LEGACY),
    (Serve.TOGGLE, Verdict.NOT_SYNCED, Side.LEGACY),
    (Serve.TOGGLE, Verdict.ERROR, Side.LEGACY),
])
def test_decision_follows_serve_and_only_an_on_toggle_moves_traffic(serve, verdict, side):
    decision = decide(make("orders", "/api", new=ORDERS, serve=serve, toggle=TOGGLE), facts(), Fixed(verdict))
    assert decision.side is side
    assert decision.upstream is (ORDERS if side is Side.NEW else MONOLITH)
    assert (decision.toggle is not None) is (serve is Serve.TOGGLE)


def test_the_toggle_is_asked_with_the_sticky_value_and_request_facts():
    toggles = Fixed(Verdict.ON)
    route = make("orders", "/api", new=ORDERS, serve=Serve.TOGGLE, toggle=TOGGLE)
    decision = decide(route, facts("POST", "/api/7", {"X-User-Id": "alice"}), toggles)
    assert toggles.asked == [("orders-to-new", {
        "userId": "alice", "sessionId": "alice", "remoteAddress": "192.0.2.9",
        "properties": {"path": "/api/7", "method": "POST"}})]
    assert decision.reason == "toggle orders-to-new is on for header:X-User-Id='alice'"


def test_parallel_run_shadows_the_other_side_for_eligible_methods_only():
    route = make("orders", "/api", new=ORDERS, serve=Serve.NEW, parallel_run=ParallelRun(enabled=True))
    assert decide(route, facts("GET"), Fixed(Verdict.OFF)).shadow is MONOLITH
    assert decide(route, facts("POST"), Fixed(Verdict.OFF)).shadow is None
    off = make("orders", "/api", new=ORDERS, serve=Serve.LEGACY)
    assert decide(off, facts("GET"), Fixed(Verdict.OFF)).shadow is None
