"""The route index answers exactly what the scan in file order answers (first match wins), for files of
prefixes, methods, hosts and headers mixed, and requests near and far from each route."""

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.model import Match, Route, Upstream
from proxy.routing.decide import match_route
from proxy.routing.index import RouteIndex

MONOLITH = Upstream("monolith", "http://127.0.0.1:9001")
SEGMENTS = st.sampled_from(["api", "orders", "7", "v2", "a", ""])
HOSTS = st.sampled_from([None, "shop.example.com", "*.example.com"])
METHODS = st.sampled_from([None, frozenset({"GET"}), frozenset({"POST", "PUT"})])
HEADERS = st.sampled_from([(), (("x-beta", "1"),)])


@st.composite
def routes(draw) -> tuple[Route, ...]:
    count = draw(st.integers(1, 12))
    made = []
    for n in range(count):
        segments = [s for s in draw(st.lists(SEGMENTS, max_size=3)) if s]
        match = Match("/" + "/".join(segments), draw(METHODS), draw(HEADERS), draw(HOSTS))
        made.append(Route(f"r{n}", match, MONOLITH))
    return tuple(made)


@st.composite
def requests(draw) -> tuple[str, str, CIMultiDict]:
    path = "/" + "/".join(draw(st.lists(SEGMENTS, max_size=4)))
    headers = CIMultiDict({"Host": draw(st.sampled_from(["shop.example.com", "API.example.com:443", "other.org"]))})
    if draw(st.booleans()):
        headers["X-Beta"] = "1"
    return draw(st.sampled_from(["GET", "POST", "DELETE"])), path, headers


@settings(max_examples=500, deadline=None)
@given(routes(), st.lists(requests(), min_size=1, max_size=8))
def test_the_index_answers_what_the_scan_in_file_order_answers(table, sent):
    index = RouteIndex(table)
    for method, path, headers in sent:
        assert index.match(method, path, headers) is match_route(table, method, path, headers)


def test_a_thousand_routes_are_walked_not_scanned(monkeypatch):
    """The last of 1,000 routes is found by walking its path: the routes tried are those on that path (the
    catch-all and the route itself), not all 1,000."""
    table = tuple(Route(f"r{n}", Match(f"/svc{n}/items"), MONOLITH) for n in range(999)) + (
        Route("last", Match("/svc999/items", frozenset({"GET"})), MONOLITH), Route("all", Match("/"), MONOLITH))
    index = RouteIndex(table)
    tried = []
    original = Match.matches_but_host

    def counted(self, method, path, headers):
        tried.append(self.path)
        return original(self, method, path, headers)

    monkeypatch.setattr(Match, "matches_but_host", counted)
    assert index.match("GET", "/svc999/items/7", {}).name == "last"
    assert index.match("POST", "/svc999/items/7", {}).name == "all"
    assert tried == ["/svc999/items", "/svc999/items", "/"]
