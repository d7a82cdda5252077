"""routes.yaml's host rules, rewrites and per-route timeouts: what loads, and each mistake as FILE:LINE: message."""

import pytest

from proxy.config import parse
from proxy.model import Match, Rewrite
from tests.test_config import BASE, errors, strangler, swap, then

ROUTE = "route 'orders'"
MATCH = f"{ROUTE}, match"
REWRITE = f"{ROUTE}, rewrite"


def loaded(text: str):
    [route] = parse(text.encode(), "routes.yaml").routes
    return route


def test_host_rewrite_and_timeout_load_as_values():
    route = loaded(swap("/api/orders}", "/api/orders, host: '*.Example.COM.'}",
                        BASE + "    rewrite: {new: /orders/, legacy: /shop/orders}\n    timeout: 2\n"))
    assert route.match == Match("/api/orders", host="*.example.com")
    assert route.new_rewrite == Rewrite("/api/orders", "/orders", ("http://127.0.0.1:9002",))
    assert route.legacy_rewrite == Rewrite("/api/orders", "/shop/orders", ("http://127.0.0.1:9001",))
    assert route.timeout == 2.0


@pytest.mark.parametrize("text, new_rewrite", [
    (BASE, None),
    (BASE + "    rewrite: {new: /api/orders}\n", None),  # the prefix itself: nothing to rewrite
    (BASE + "    rewrite: {new: /}\n", Rewrite("/api/orders", "/", ("http://127.0.0.1:9002",))),
    (swap("9002", "80", BASE) + "    rewrite: {new: /o}\n",
     Rewrite("/api/orders", "/o", ("http://127.0.0.1:80", "http://127.0.0.1"))),  # as its Locations may name it
])
def test_a_rewrite_is_kept_only_when_it_changes_something(text, new_rewrite):
    assert loaded(text).new_rewrite == new_rewrite


def host(value: str) -> str:
    return swap("/api/orders}", f"/api/orders, host: {value}}}")


@pytest.mark.parametrize("text, expected", [
    pytest.param(host("'shop.example.com:8080'"), f"routes.yaml:7: {MATCH}: 'host' has no port (any port matches), "
                 "got 'shop.example.com:8080': write host: shop.example.com", id="host-port"),
    pytest.param(host("'[::1]:8080'"), f"routes.yaml:7: {MATCH}: 'host' has no port (any port matches), "
                 "got '[::1]:8080': write host: [::1]", id="host-ipv6-port"),
    pytest.param(host("'https://shop.example.com/api'"), f"routes.yaml:7: {MATCH}: 'host' is a host name, not a URL "
                 "or a path, got 'https://shop.example.com/api': write host: shop.example.com (paths go in 'path')",
                 id="host-url"),
    pytest.param(host("shop.example.com/api"), f"routes.yaml:7: {MATCH}: 'host' is a host name, not a URL or a "
                 "path, got 'shop.example.com/api': write host: shop.example.com (paths go in 'path')",
                 id="host-path"),
    pytest.param(host("'shop.*.com'"), f"routes.yaml:7: {MATCH}: 'host' 'shop.*.com' may hold a wildcard only as "
                 "its first label, as in '*.example.com' (which does not take example.com itself)",
                 id="host-wildcard-inside"),
    pytest.param(host("'*example.com'"), f"routes.yaml:7: {MATCH}: 'host' '*example.com' may hold a wildcard only "
                 "as its first label, as in '*.example.com' (which does not take example.com itself)",
                 id="host-wildcard-not-a-label"),
    pytest.param(host("'*'"), f"routes.yaml:7: {MATCH}: 'host: *' would take any host: leave 'host' out for that",
                 id="host-star"),
    pytest.param(host("'shop..example.com'"), f"routes.yaml:7: {MATCH}: 'host' 'shop..example.com' is not a host "
                 "name (letters, digits, '-' and '.'), an IPv6 literal like [::1], or '*.' and a name",
                 id="host-empty-label"),
    pytest.param(host("8080"), f"routes.yaml:7: {MATCH}: 'host' must be a string, got a number 8080",
                 id="host-number"),
    pytest.param(BASE + "    rewrite: {new: orders}\n",
                 f"routes.yaml:10: {REWRITE}: 'new' must be an absolute path like /orders, got 'orders'",
                 id="rewrite-relative"),
    pytest.param(BASE + "    rewrite: {new: '/orders?v=2'}\n",
                 f"routes.yaml:10: {REWRITE}: 'new' is a path prefix: it takes no query ('?') or fragment ('#'); "
                 "the client's query passes as sent, got '/orders?v=2'", id="rewrite-query"),
    pytest.param(BASE + "    rewrite: {legacy: /a/../orders}\n",
                 f"routes.yaml:10: {REWRITE}: 'legacy' may not hold '.' or '..' segments: the upstream would read "
                 "another path, got '/a/../orders'", id="rewrite-dot-dot"),
    pytest.param(BASE + "    rewrite: {new: //orders}\n",
                 f"routes.yaml:10: {REWRITE}: 'new' may not hold '//' (an empty segment): upstreams read it in "
                 "different ways, got '//orders'", id="rewrite-double-slash"),
    pytest.param(BASE + "    rewrite: {new: /or%64ers}\n",
                 f"routes.yaml:10: {REWRITE}: 'new' must be plain segments, written decoded: no '%', ';' or "
                 "spaces, got '/or%64ers'", id="rewrite-percent"),
    pytest.param(swap("new: orders", "rewrite: {new: /orders}"),
                 f"routes.yaml:9: {REWRITE}: the route has no 'new' side to rewrite: add 'new: UPSTREAM' to the "
                 "route, or remove rewrite.new", id="rewrite-missing-side"),
    pytest.param(BASE + "    rewrite: {neww: /orders}\n",
                 f"routes.yaml:10: unknown key 'neww' in {REWRITE}; did you mean 'new'?", id="rewrite-unknown-key"),
    pytest.param(BASE + "    rewrite: /orders\n",
                 f"routes.yaml:10: {REWRITE} must be a mapping, got a string '/orders'", id="rewrite-not-a-mapping"),
    pytest.param(BASE + "    timeout: 0\n", f"routes.yaml:10: {ROUTE}: 'timeout' must be above 0 seconds, got 0 "
                 "(leave it out to use the upstream's timeout)", id="timeout-zero"),
    pytest.param(BASE + "    timeout: -1.5\n", f"routes.yaml:10: {ROUTE}: 'timeout' must be above 0 seconds, got "
                 "-1.5 (leave it out to use the upstream's timeout)", id="timeout-negative"),
    pytest.param(BASE + "    timeout: 5s\n", f"routes.yaml:10: {ROUTE}: 'timeout' must be a number of seconds, "
                 "got a string '5s'", id="timeout-text"),
])
def test_host_rewrite_and_timeout_mistakes_are_file_line_messages(text, expected):
    assert errors(text) == [expected]


@pytest.mark.parametrize("text, expected", [
    pytest.param(then("shop", "path: /api/orders/x, host: shop.example.com"),
                 ["routes.yaml:10: warning: route 'shop' is unreachable: route 'orders' (line 6) matches every "
                  "request it would, on any host (host shop.example.com among them)"], id="hidden-by-any-host"),
    pytest.param(then("shop", "path: /api/orders, host: shop.example.com",
                      first="path: /api/orders, host: '*.example.com'"),
                 ["routes.yaml:10: warning: route 'shop' is unreachable: route 'orders' (line 6) matches every "
                  "request it would (host *.example.com takes shop.example.com)"], id="hidden-by-a-wildcard"),
    pytest.param(then("eu", "path: /api/orders, host: '*.eu.example.com'",
                      first="path: /api, host: '*.example.com'"),
                 ["routes.yaml:10: warning: route 'eu' is unreachable: route 'orders' (line 6) matches every "
                  "request it would (host *.example.com takes *.eu.example.com)"], id="wildcard-below-a-wildcard"),
    pytest.param(then("any", "path: /api/orders", first="path: /api/orders, host: shop.example.com"), [],
                 id="earlier-restricted-by-host"),
    pytest.param(then("eu", "path: /api/orders, host: eu.example.com",
                      first="path: /api/orders, host: shop.example.com"), [], id="another-host"),
    pytest.param(then("bare", "path: /api/orders, host: example.com",
                      first="path: /api/orders, host: '*.example.com'"), [], id="wildcard-not-the-bare-name"),
])
def test_check_warns_of_a_host_route_an_earlier_route_hides(text, expected):
    warnings = [str(w) for w in parse(text.encode(), "routes.yaml").warnings]
    assert [w for w in warnings if "not used by any route" not in w] == expected


def test_strangler_check_prints_the_hidden_host_route(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(then("shop", "path: /api/orders, host: shop.example.com"))
    done = strangler("check", "--config", str(path))
    assert (done.returncode, done.stdout.splitlines()) == (0, [
        f"{path}:10: warning: route 'shop' is unreachable: route 'orders' (line 6) matches every request it "
        "would, on any host (host shop.example.com among them)", "ok: 2 routes, 2 upstreams"])
