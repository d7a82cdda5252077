"""Host routes: a request's Host normalised, exact and wildcard rules, and through real sockets which
route takes which host (case, port, IPv6, none at all)."""

import pytest
from multidict import CIMultiDict

from proxy.model import Match, Route, Upstream
from proxy.model.hosts import host_covers, host_matches, request_host
from proxy.routing.decide import match_route
from tests.helpers import answers, raw_exchange, route

MONOLITH = Upstream("monolith", "http://127.0.0.1:9001")


@pytest.mark.parametrize("header, host", [
    ("shop.example.com", "shop.example.com"),
    ("Shop.EXAMPLE.com", "shop.example.com"),
    ("shop.example.com:8080", "shop.example.com"),
    ("shop.example.com.", "shop.example.com"),
    ("shop.example.com.:80", "shop.example.com"),
    ("[::1]:8080", "[::1]"),
    ("[::1]", "[::1]"),
    ("[FE80::A]:1", "[fe80::a]"),
    ("10.0.0.7:8080", "10.0.0.7"),
    (None, None),
])
def test_a_host_header_is_compared_lower_case_without_its_port(header, host):
    assert request_host(header) == host


@pytest.mark.parametrize("rule, host, matches", [
    ("shop.example.com", "shop.example.com", True),
    ("shop.example.com", "eu.shop.example.com", False),
    ("shop.example.com", "example.com", False),
    ("*.example.com", "shop.example.com", True),
    ("*.example.com", "eu.shop.example.com", True),  # any depth, as nginx and Envoy
    ("*.example.com", "example.com", False),  # never the bare name
    ("*.example.com", ".example.com", False),
    ("*.example.com", "shopexample.com", False),
    ("*.example.com", "example.com.evil", False),
    ("[::1]", "[::1]", True),
    ("shop.example.com", None, False),  # no Host (HTTP/1.0): no host rule takes it
    ("*.example.com", None, False),
])
def test_host_rules_are_exact_or_a_leading_wildcard(rule, host, matches):
    assert host_matches(rule, host) is matches


@pytest.mark.parametrize("earlier, later, covered", [
    (None, "shop.example.com", True),
    (None, None, True),
    ("shop.example.com", None, False),
    ("shop.example.com", "shop.example.com", True),
    ("shop.example.com", "eu.example.com", False),
    ("*.example.com", "shop.example.com", True),
    ("*.example.com", "*.example.com", True),
    ("*.example.com", "*.shop.example.com", True),
    ("*.shop.example.com", "*.example.com", False),
    ("shop.example.com", "*.example.com", False),
    ("*.example.com", "example.com", False),
])
def test_a_host_rule_covers_the_hosts_it_takes(earlier, later, covered):
    assert host_covers(earlier, later) is covered
    assert Match("/", host=earlier).covers(Match("/api", host=later)) is covered


class NoHostLookups(CIMultiDict):
    """Request headers that fail the test when Host is read."""

    def get(self, key, default=None):
        assert key.lower() != "host", "Host was read, though no route has a host rule"
        return super().get(key, default)


def test_the_host_is_read_only_when_a_host_route_is_tried():
    routes = (Route("api", Match("/api"), MONOLITH), Route("all", Match("/"), MONOLITH))
    assert match_route(routes, "GET", "/x", NoHostLookups({"Host": "shop.example.com"})).name == "all"
    hosted = (Route("api", Match("/api"), MONOLITH), Route("shop", Match("/", host="shop.example.com"), MONOLITH))
    assert match_route(hosted, "GET", "/api/x", NoHostLookups({"Host": "shop.example.com"})).name == "api"


def test_first_match_wins_across_host_rules():
    routes = (Route("exact", Match("/", host="shop.example.com"), MONOLITH),
              Route("wild", Match("/", host="*.example.com"), MONOLITH),
              Route("all", Match("/"), MONOLITH))
    assert [match_route(routes, "GET", "/", CIMultiDict(h)).name for h in (
        {"Host": "SHOP.example.com:8443"}, {"Host": "eu.example.com"}, {"Host": "example.com"}, {})] == [
        "exact", "wild", "all", "all"]


HOSTED = [route("exact", match={"host": "shop.example.com"}, legacy="exact"),
          route("wild", match={"host": "*.example.com"}, legacy="wild"),
          route("v6", match={"host": "[::1]"}, legacy="v6"),
          route("all", legacy="rest")]


@pytest.fixture
async def hosted(make_upstream, start_proxy):
    upstreams = {name: await make_upstream(name) for name in ("exact", "wild", "v6", "rest")}
    proxy = await start_proxy({name: u.url for name, u in upstreams.items()}, HOSTED)

    async def served_by(head: bytes) -> str | int:
        raw = await raw_exchange(proxy.port, b"GET /p HTTP/1.1\r\n" + head + b"Connection: close\r\n\r\n")
        name = [u.name for u in upstreams.values() if u.seen]
        for u in upstreams.values():
            u.seen.clear()
        return name[0] if name else answers(raw)[0][0]
    return served_by


@pytest.mark.parametrize("head, served", [
    (b"Host: shop.example.com\r\n", "exact"),
    (b"Host: SHOP.Example.COM\r\n", "exact"),
    (b"Host: shop.example.com:8080\r\n", "exact"),
    (b"Host: shop.example.com.\r\n", "exact"),
    (b"Host: eu.example.com\r\n", "wild"),
    (b"Host: a.b.example.com:1\r\n", "wild"),
    (b"Host: example.com\r\n", "rest"),  # the wildcard does not take the bare name
    (b"Host: [::1]:8080\r\n", "v6"),
    (b"Host: [::1]\r\n", "v6"),
    (b"Host: 127.0.0.1:8080\r\n", "rest"),
    (b"Host: shop.example.com\r\nHost: eu.example.com\r\n", 400),  # two: refused before routing
])
async def test_host_routes_through_the_proxy(hosted, head, served):
    assert await hosted(head) == served


async def test_an_http_1_0_request_without_host_is_taken_by_no_host_route(make_upstream, start_proxy):
    shop = await make_upstream("shop")
    proxy = await start_proxy({"shop": shop.url}, [route("shop", match={"host": "shop.example.com"}, legacy="shop")])
    raw = await raw_exchange(proxy.port, b"GET /p HTTP/1.0\r\n\r\n")
    assert answers(raw)[0][0] == 404 and not shop.seen
    raw = await raw_exchange(proxy.port, b"GET /p HTTP/1.0\r\nHost: shop.example.com\r\n\r\n")
    assert answers(raw)[0][0] == 200 and [s.target for s in shop.seen] == ["/p"]
