"""Failure kept local, through real sockets: breakers, fallback, retries, load shedding, slow clients."""

import asyncio
import statistics
import time

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import eventually, free_port, raw_exchange, read_for, route, status_of

UNREACHABLE = {"url": "", "connect_timeout": 0.3}


def metric(proxy, name: str, labels: dict) -> float:
    return proxy.proxy.metrics.registry.get_sample_value(name, labels) or 0.0


async def get(http, url: str, method: str = "GET", **kw) -> tuple[int, dict | str, aiohttp.ClientResponse]:
    async with http.request(method, url, **kw) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body, response


def refusing(**more) -> dict:
    return {"url": f"http://127.0.0.1:{free_port()}", **more}


async def test_the_breaker_opens_fails_fast_and_closes_after_a_good_probe(make_upstream, start_proxy, http):
    healthy = await make_upstream("orders")
    upstream = {"url": f"http://127.0.0.1:{free_port()}", "breaker": {"failures": 3, "open_seconds": 0.5}}
    proxy = await start_proxy({"orders": upstream}, [route("all", legacy="orders")])
    statuses = [(await get(http, proxy.url + "/x"))[0] for _ in range(3)]
    assert statuses == [502, 502, 502]
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        status, body, response = await get(http, proxy.url + "/x")
        timings.append(time.perf_counter() - started)
        assert (status, body["error"], response.headers["Retry-After"]) == (503, "breaker_open", "1")
    assert statistics.median(timings) < 0.005  # no connection tried while open
    async with http.get(proxy.admin_url + "/status") as response:
        assert (await response.json())["upstreams"]["orders"]["breaker"] == "open"
    assert metric(proxy, "strangler_breaker_state", {"upstream": "orders"}) == 2
    proxy.rewrite({"orders": {**upstream, "url": healthy.url}}, [route("all", legacy="orders")])
    await proxy.proxy.reload("test")  # a new URL is a new upstream, with a fresh breaker
    assert (await get(http, proxy.url + "/x"))[0] == 200


async def test_half_open_probes_close_the_breaker_when_the_upstream_is_back(make_upstream, start_proxy, http):
    failing = True

    async def flaky(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=500 if failing else 200, text="state")
    orders = await make_upstream("orders", flaky)
    proxy = await start_proxy({"orders": {"url": orders.url, "breaker": {"failures": 2, "open_seconds": 0.3}}},
                              [route("all", legacy="orders")])
    assert [(await get(http, proxy.url + "/x"))[0] for _ in range(3)] == [500, 500, 503]
    failing = False
    await asyncio.sleep(0.35)
    assert (await get(http, proxy.url + "/x"))[0] == 200
    assert [s for s in ("closed", "half_open", "open")
            if metric(proxy, "strangler_breaker_transitions_total", {"upstream": "orders", "state": s})] == [
        "closed", "half_open", "open"]


@pytest.mark.parametrize("trouble", ["refused", "status 500", "breaker open"])
async def test_fallback_answers_from_legacy_when_the_new_service_fails(make_upstream, start_proxy, http, trouble):
    async def broken(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=500, text="new is broken")
    legacy = await make_upstream("legacy")
    new = await make_upstream("new", broken)
    new_spec = refusing() if trouble == "refused" else {"url": new.url, "breaker": {"failures": 1}}
    proxy = await start_proxy({"legacy": legacy.url, "new": new_spec},
                              [route("orders", "/api", new="new", serve="new", fallback="legacy")])
    if trouble == "breaker open":
        await get(http, proxy.url + "/api/warm-up")  # one 500 (fallen back) opens the new service's breaker
        new.seen.clear()
    status, body, response = await get(http, proxy.url + "/api/orders/1")
    assert (status, response.headers["X-Upstream"]) == (200, "legacy")
    reason = {"refused": "refused", "status 500": "status", "breaker open": "breaker_open"}[trouble]
    assert metric(proxy, "strangler_fallbacks_total", {"route": "orders", "reason": reason}) >= 1
    if trouble == "breaker open":
        assert new.seen == []


async def test_no_fallback_for_a_write_the_new_service_may_have_done(make_upstream, start_proxy, http):
    async def broken(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=500, text="new failed after writing")
    legacy, new = await make_upstream("legacy"), await make_upstream("new", broken)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              [route("orders", "/api", new="new", serve="new", fallback="legacy")])
    status, body, _ = await get(http, proxy.url + "/api/orders", "POST", data=b'{"qty": 1}')
    assert (status, body) == (500, "new failed after writing")  # the new service's own answer, as it was
    assert legacy.seen == []


async def test_retries_cover_gateway_errors_for_idempotent_methods_only(make_upstream, start_proxy, http):
    calls = {"n": 0}

    async def once_unavailable(request: web.BaseRequest) -> web.StreamResponse:
        calls["n"] += 1
        return web.Response(status=503 if calls["n"] % 2 == 1 else 200, text=f"call {calls['n']}")
    orders = await make_upstream("orders", once_unavailable)
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders", retries=1)])
    assert (await get(http, proxy.url + "/x"))[:2] == (200, "call 2")
    assert (await get(http, proxy.url + "/x", "POST", data=b"x"))[:2] == (503, "call 3")
    assert [s.method for s in orders.seen] == ["GET", "GET", "POST"]
    assert metric(proxy, "strangler_retries_total", {"route": "all", "upstream": "orders", "reason": "status"}) == 1


async def test_a_stale_pooled_connection_is_retried_once_and_counted(raw_upstream, start_proxy, http):
    conversations = {"n": 0}

    async def drop_first(reader, writer):
        conversations["n"] += 1
        if conversations["n"] == 1:
            writer.transport.abort()  # as a keep-alive connection the upstream just closed
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    upstream = await raw_upstream(drop_first)
    proxy = await start_proxy({"orders": upstream.url}, [route("all", legacy="orders")])
    assert (await get(http, proxy.url + "/x"))[:2] == (200, "ok")
    assert metric(proxy, "strangler_retries_total",
                  {"route": "all", "upstream": "orders", "reason": "stale_connection"}) == 1
    await proxy.proxy.stop()
    conversations["n"] = 0
    fresh = await start_proxy({"orders": upstream.url}, [route("all", legacy="orders")])  # no pooled connection
    assert (await get(http, fresh.url + "/x", "POST", data=b"x"))[0] == 502  # a write is never sent twice
    assert conversations["n"] == 1


async def test_the_retry_budget_keeps_an_outage_from_multiplying(start_proxy, http):
    proxy = await start_proxy({"orders": refusing()}, [route("all", legacy="orders", retries=3)])
    await asyncio.gather(*(get(http, proxy.url + f"/x/{n}") for n in range(50)))
    retries = metric(proxy, "strangler_retries_total", {"route": "all", "upstream": "orders", "reason": "refused"})
    assert 3 <= retries <= 0.2 * 50 + 3  # not 150


async def test_never_retried_once_the_answer_started_or_the_body_was_sent(raw_upstream, start_proxy, http):
    async def half(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.transport.abort()
    upstream = await raw_upstream(half)
    proxy = await start_proxy({"orders": upstream.url}, [route("all", legacy="orders", retries=3)])
    async with http.get(proxy.url + "/x") as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

    async def pieces():
        yield b"abc"
        yield b"def"
    async with http.put(proxy.url + "/y", data=pieces()) as response:
        assert response.status == 200  # the 10 bytes arrive as a 200 that is then cut
    assert len(upstream.heads) == 2


async def test_over_the_listener_limit_requests_are_shed_at_once_and_admin_still_answers(
        make_upstream, start_proxy, http):
    release = asyncio.Event()

    async def held(request: web.BaseRequest) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="done")
    orders = await make_upstream("orders", held)
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")], server={"max_in_flight": 2})
    slow = [asyncio.create_task(get(http, proxy.url + f"/slow/{n}")) for n in range(2)]
    await eventually(lambda: len(orders.seen) >= 2, interval=0.01)
    shed = await asyncio.gather(*(get(http, proxy.url + "/more") for _ in range(3)))
    assert [(s, b["error"], r.headers["Retry-After"]) for s, b, r in shed] == [(503, "overloaded", "1")] * 3
    async with http.get(proxy.admin_url + "/healthz") as response:
        assert response.status == 200
    release.set()
    assert [s for s, _, _ in await asyncio.gather(*slow)] == [200, 200]
    assert metric(proxy, "strangler_shed_requests_total", {"scope": "listener"}) == 3


async def test_an_upstream_with_too_many_waiting_sheds_the_rest(make_upstream, start_proxy, http):
    release = asyncio.Event()

    async def held(request: web.BaseRequest) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="done")
    orders = await make_upstream("orders", held)
    proxy = await start_proxy({"orders": {"url": orders.url, "max_connections": 1, "max_pending": 1,
                                          "connect_timeout": 5}}, [route("all", legacy="orders")])
    waiting = [asyncio.create_task(get(http, proxy.url + f"/w/{n}")) for n in range(2)]
    await eventually(lambda: proxy.proxy.live.current.pools["orders"].in_flight >= 2, interval=0.01)
    status, body, response = await get(http, proxy.url + "/more")
    assert (status, body["error"], response.headers["Retry-After"]) == (503, "overloaded", "1")
    release.set()
    assert [s for s, _, _ in await asyncio.gather(*waiting)] == [200, 200]


async def test_a_client_slow_with_its_headers_is_disconnected(make_upstream, start_proxy):
    proxy = await start_proxy({"orders": (await make_upstream("orders")).url}, [route("all", legacy="orders")],
                              server={"header_timeout": 0.3})
    started = time.monotonic()
    assert await sent_then_read(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ") == (b"", True)
    assert time.monotonic() - started < 2


async def test_a_client_slow_with_its_body_gets_408(make_upstream, start_proxy):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")], server={"body_timeout": 0.3})
    raw = await raw_exchange(proxy.port, b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
                             timeout=3)
    assert status_of(raw) == 408 and b'"request_timeout"' in raw
    assert not raw.endswith(b"<<timeout: connection still open>>")


async def test_an_idle_keep_alive_connection_is_closed(make_upstream, start_proxy):
    proxy = await start_proxy({"orders": (await make_upstream("orders")).url}, [route("all", legacy="orders")],
                              server={"keepalive_timeout": 0.3})
    received, closed = await sent_then_read(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status_of(received) == 200 and closed


async def sent_then_read(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send `data` and read for up to 3 s: what came back, and whether the proxy hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await read_for(reader, 3)
    finally:
        writer.close()
