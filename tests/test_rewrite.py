"""Rewrites: each side's own form of the client's target, cut where routing matched, and a rewritten
side's Locations mapped back; table by table, then through real sockets (served, shadowed, fallen back,
logged, stored)."""

import asyncio
import io
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from proxy.config.rewrite import origins
from proxy.model import Rewrite
from proxy.observe import logs
from proxy.routing.rewrite import client_location, relocated, sent_target
from proxy.wire.target import parse_target
from reports import query
from tests.helpers import free_port, raw_exchange, route
from tests.test_parallel_run import legacy_items, new_items, settle

ORDERS = Rewrite("/api/orders", "/orders", origins("http://127.0.0.1:9002"))
TO_ROOT = Rewrite("/api/orders", "/", origins("http://127.0.0.1:9002"))
FROM_ROOT = Rewrite("/", "/v2", origins("http://orders.internal:80"))


@pytest.mark.parametrize("rewrite, client, sent", [
    (ORDERS, "/api/orders/7?x=1", "/orders/7?x=1"),
    (ORDERS, "/api/orders", "/orders"),
    (ORDERS, "/api/orders?x=1", "/orders?x=1"),
    (ORDERS, "/api/orders/", "/orders/"),
    (ORDERS, "/api/orders/7;v=2/%41?q=%2F&r=a+b&s=/api/orders", "/orders/7;v=2/%41?q=%2F&r=a+b&s=/api/orders"),
    (ORDERS, "/api/%6Frders/7?x=1", "/orders/7?x=1"),  # the same path, spelt with an escape: cut all the same
    (ORDERS, "/%61pi/orders", "/orders"),
    (ORDERS, "/api/orders;jsessionid=1/7", "/orders/7"),  # parameters of the cut segments go with them
    (ORDERS, "/api;v=1/orders/7", "/orders/7"),
    (ORDERS, "/api/orders;x", "/orders"),
    (TO_ROOT, "/api/orders/7", "/7"),  # never //7
    (TO_ROOT, "/api/orders", "/"),
    (TO_ROOT, "/api/orders/", "/"),
    (TO_ROOT, "/api/orders?x=1", "/?x=1"),
    (FROM_ROOT, "/x/y?z", "/v2/x/y?z"),
    (FROM_ROOT, "/", "/v2/"),
])
def test_the_matched_prefix_is_replaced_and_the_rest_passes_as_sent(rewrite, client, sent):
    assert sent_target(rewrite, client) == sent
    routed = parse_target(client)  # what routing matched; the side reads the same path below its own prefix
    below = routed[len(rewrite.matched.rstrip("/")):]
    assert parse_target(sent) == (rewrite.sent.rstrip("/") + below or "/")


@pytest.mark.parametrize("rewrite, location, mapped", [
    (ORDERS, "/orders/7", "/api/orders/7"),
    (ORDERS, "/orders", "/api/orders"),
    (ORDERS, "/orders?page=2", "/api/orders?page=2"),
    (ORDERS, "/orders#top", "/api/orders#top"),
    (ORDERS, "http://127.0.0.1:9002/orders/7", "/api/orders/7"),
    (ORDERS, "HTTP://127.0.0.1:9002/orders/7", "/api/orders/7"),
    (ORDERS, "/ordersX", None),
    (ORDERS, "/other/7", None),
    (ORDERS, "orders/7", None),  # relative to the request: left to the client, as it was
    (ORDERS, "//127.0.0.1:9002/orders/7", None),
    (ORDERS, "http://127.0.0.1:9002", None),
    (ORDERS, "http://127.0.0.1:90021/orders/7", None),
    (ORDERS, "https://127.0.0.1:9002/orders/7", None),
    (ORDERS, "http://shop.example.com/orders/7", None),
    (TO_ROOT, "/7", "/api/orders/7"),
    (TO_ROOT, "/", "/api/orders/"),
    (TO_ROOT, "http://127.0.0.1:9002/7?x", "/api/orders/7?x"),
    (TO_ROOT, "//evil.example/", None),
    (FROM_ROOT, "/v2/x", "/x"),
    (FROM_ROOT, "/v2", "/"),
    (FROM_ROOT, "http://orders.internal/v2/x", "/x"),
    (FROM_ROOT, "http://orders.internal:80/v2/x", "/x"),
    (FROM_ROOT, "/v2//evil.example/", None),  # mapped, it would name another host
])
def test_a_location_in_the_sides_own_paths_maps_back_to_the_clients(rewrite, location, mapped):
    assert client_location(location, rewrite) == mapped


def test_relocated_lines_change_only_a_location_that_maps():
    lines = ((b"Content-Type", b"text/plain"), (b"location", b"/orders/7"), (b"X-Other", b"/orders/7"))
    assert relocated(lines, ORDERS) == (
        (b"Content-Type", b"text/plain"), (b"location", b"/api/orders/7"), (b"X-Other", b"/orders/7"))
    untouched = ((b"Location", b"https://elsewhere.example/orders/7"),)
    assert relocated(untouched, ORDERS) is untouched


def orders_route(**more) -> list[dict]:
    return [route("orders", "/api/orders", new="new", **more), route("all")]


async def fetch(http, url: str, target: str) -> aiohttp.ClientResponse:
    async with http.get(aiohttp.client.URL(url + target, encoded=True), allow_redirects=False) as response:
        await response.read()
        return response


@pytest.mark.parametrize("serve, rewrite, legacy_sees, new_sees", [
    ("new", {"new": "/orders"}, None, "/orders/7;v=1/%41?x=%2F&y=a+b"),
    ("legacy", {"new": "/orders"}, "/api/orders/7;v=1/%41?x=%2F&y=a+b", None),
    ("legacy", {"legacy": "/shop/orders", "new": "/orders"}, "/shop/orders/7;v=1/%41?x=%2F&y=a+b", None),
    ("new", {"new": "/"}, None, "/7;v=1/%41?x=%2F&y=a+b"),
])
async def test_each_side_gets_its_own_form_byte_for_byte(make_upstream, start_proxy, http, serve, rewrite,
                                                          legacy_sees, new_sees):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, orders_route(serve=serve, rewrite=rewrite))
    response = await fetch(http, proxy.url, "/api/orders/7;v=1/%41?x=%2F&y=a+b")
    assert response.status == 200
    assert [s.target for s in legacy.seen] == ([legacy_sees] if legacy_sees else [])
    assert [s.target for s in new.seen] == ([new_sees] if new_sees else [])


@pytest.mark.parametrize("client, new_sees", [
    ("/api/%6Frders/7?x=%41", "/orders/7?x=%41"),  # routed as /api/orders: the escaped prefix is cut
    ("/api/orders;jsessionid=abc/7", "/orders/7"),
    ("/api/orders", "/orders"),
])
async def test_a_prefix_spelt_otherwise_is_cut_where_routing_matched(make_upstream, start_proxy, http, client,
                                                                      new_sees):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              orders_route(serve="new", rewrite={"new": "/orders"}))
    assert (await fetch(http, proxy.url, client)).status == 200
    assert [s.target for s in new.seen] == [new_sees] and not legacy.seen


async def test_a_fallback_sends_legacy_its_own_form(make_upstream, start_proxy, http):
    legacy = await make_upstream("legacy")
    dead = f"http://127.0.0.1:{free_port()}"
    for rewrite, legacy_sees in (({"new": "/orders"}, "/api/orders/7?x=1"),
                                 ({"new": "/orders", "legacy": "/shop"}, "/shop/7?x=1")):
        legacy.seen.clear()
        proxy = await start_proxy({"legacy": legacy.url, "new": dead},
                                  orders_route(serve="new", fallback="legacy", rewrite=rewrite))
        response = await fetch(http, proxy.url, "/api/orders/7?x=1")
        assert (response.status, response.headers["X-Upstream"]) == (200, "legacy")
        assert [s.target for s in legacy.seen] == [legacy_sees]
        await proxy.proxy.stop()


async def test_a_parallel_run_sends_each_side_its_form_and_stores_the_clients_path(make_upstream, start_proxy,
                                                                                    http, tmp_path):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    database = str(tmp_path / "divergence.db")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              [route("items", "/api/items", new="new", parallel_run={"enabled": True},
                                     rewrite={"new": "/items"}, compare={"ignore_paths": ["$.updated_at"]}),
                               route("all")], reports={"database": database})
    response = await fetch(http, proxy.url, "/api/items/4?x=1")
    assert (response.status, response.headers["X-Upstream"]) == (200, "legacy")
    await settle(proxy, 1)
    assert [s.target for s in legacy.seen] == ["/api/items/4?x=1"]
    assert [(s.target, s.header("X-Strangler-Shadow")) for s in new.seen] == [("/items/4?x=1", "1")]
    [summary] = query.summary([database])
    stored = query.show([database], summary.signatures[0].example)
    assert (stored["target"], stored["legacy_target"], stored["new_target"]) == ("/api/items/4?x=1", None,
                                                                                 "/items/4?x=1")
    assert stored["differences"] == [{"path": "$.price", "kind": "changed", "legacy": 10, "new": 11}]


async def redirect(request: web.BaseRequest) -> web.StreamResponse:
    """Redirects to ?to=, where SELF stands for this upstream's own origin; streamed when ?stream=1."""
    host, port = request.transport.get_extra_info("sockname")[:2]
    location = request.query["to"].replace("SELF", f"http://{host}:{port}")
    if "stream" not in request.query:
        return web.Response(status=302, headers={"Location": location}, text="moved")
    response = web.StreamResponse(status=302, headers={"Location": location})
    await response.prepare(request)
    await asyncio.sleep(0.05)  # the head leaves before the body has arrived
    await response.write(b"moved")
    await response.write_eof()
    return response


@pytest.mark.parametrize("to, client_gets", [
    ("/orders/7", "/api/orders/7"),
    ("SELF/orders/7?a=1", "/api/orders/7?a=1"),
    ("/orders", "/api/orders"),
    ("/other/7", "/other/7"),
    ("/ordersX", "/ordersX"),
    ("http://elsewhere.example/orders/7", "http://elsewhere.example/orders/7"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_rewritten_sides_location_maps_back_to_the_clients_prefix(make_upstream, start_proxy, http, to,
                                                                          client_gets, stream):
    legacy, new = await make_upstream("legacy", redirect), await make_upstream("new", redirect)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              orders_route(serve="new", rewrite={"new": "/orders"}))
    query_string = aiohttp.helpers.quote(to, safe="") + ("&stream=1" if stream else "")
    response = await fetch(http, proxy.url, f"/api/orders/x?to={query_string}")
    assert (response.status, response.headers["Location"]) == (302, client_gets)


async def test_a_side_without_a_rewrite_keeps_its_location_though_the_same_upstream_serves_one(
        make_upstream, start_proxy, http):
    upstream = await make_upstream("svc", redirect)
    proxy = await start_proxy({"legacy": upstream.url, "new": upstream.url},
                              [route("plain", "/orders", new="new"),
                               route("moved", "/api/orders", new="new", serve="new", rewrite={"new": "/orders"})])
    to = "?to=%2Forders%2F7"
    answered = [(await fetch(http, proxy.url, path + to)).headers["Location"]
                for path in ("/orders/1", "/api/orders/1", "/orders/1", "/api/orders/1")]
    assert answered == ["/orders/7", "/api/orders/7", "/orders/7", "/api/orders/7"]  # one upstream, two routes


async def test_the_access_line_shows_the_clients_path_and_the_rewritten_one(make_upstream, start_proxy, http,
                                                                             monkeypatch, caplog):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              orders_route(serve="new", rewrite={"new": "/orders"}))
    written = io.StringIO()
    monkeypatch.setattr(logs, "_stream", written)
    caplog.set_level(logging.INFO, "strangler.access")
    await fetch(http, proxy.url, "/api/orders/7?x=1")
    await fetch(http, proxy.url, "/elsewhere")
    proxy.proxy.handler.access.flush()
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [(line["path"], line.get("upstream_path")) for line in lines] == [("/api/orders/7", "/orders/7"),
                                                                          ("/elsewhere", None)]


async def test_a_websocket_handshake_is_sent_the_rewritten_path(raw_upstream, start_proxy):
    switch = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    upstream = await raw_upstream(switch)
    upstream.close_after_reply = True
    proxy = await start_proxy({"legacy": upstream.url, "new": upstream.url},
                              orders_route(serve="new", rewrite={"new": "/orders"}))
    await raw_exchange(proxy.port, b"GET /api/orders/live?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                   b"Sec-WebSocket-Version: 13\r\n\r\n", timeout=1)
    assert upstream.heads[0].startswith(b"GET /orders/live?x=1 HTTP/1.1\r\n")


def answering_location(location: str):
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": location}, text="moved")
    return handler


@pytest.mark.parametrize("serve", ["legacy", "new"])
async def test_a_parallel_run_compares_locations_as_the_client_gets_them(make_upstream, start_proxy, http, tmp_path,
                                                                         serve):
    legacy = await make_upstream("legacy", answering_location("/api/orders/7"))
    new = await make_upstream("new", answering_location("/orders/7"))
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              orders_route(serve=serve, rewrite={"new": "/orders"}, parallel_run={"enabled": True},
                                           compare={"headers": ["location"]}),
                              reports={"database": str(tmp_path / "divergence.db")})
    response = await fetch(http, proxy.url, "/api/orders/7")
    assert response.headers["Location"] == "/api/orders/7"
    await settle(proxy, 1, "orders")
    registry = proxy.proxy.metrics.registry
    assert registry.get_sample_value("strangler_comparisons_total", {"route": "orders", "result": "matched"}) == 1
