"""A route's own `timeout`: it bounds each exchange of that route in place of the upstream's, shorter or
longer, and leaves the upstream's other routes alone."""

import asyncio
import time

from aiohttp import web

from tests.helpers import route


async def slow(request: web.BaseRequest) -> web.StreamResponse:
    await asyncio.sleep(float(request.query.get("sleep", "0.6")))
    return web.Response(text="late but whole")


async def get(http, url: str) -> tuple[int, float]:
    started = time.monotonic()
    async with http.get(url) as response:
        await response.read()
        return response.status, time.monotonic() - started


async def test_a_shorter_route_timeout_cuts_the_exchange_sooner(make_upstream, start_proxy, http):
    legacy = await make_upstream("legacy", slow)
    proxy = await start_proxy({"legacy": {"url": legacy.url, "timeout": 10}},
                              [route("quick", "/quick", timeout=0.2), route("all")])
    status, took = await get(http, proxy.url + "/quick/x")
    assert status == 504 and took < 0.55  # the route's 0.2 s, not the upstream's 10
    status, took = await get(http, proxy.url + "/other")
    assert (status, took > 0.55) == (200, True)  # the upstream's other routes keep its timeout


async def test_a_longer_route_timeout_lets_a_slow_route_finish(make_upstream, start_proxy, http):
    legacy = await make_upstream("legacy", slow)
    proxy = await start_proxy({"legacy": {"url": legacy.url, "timeout": 0.2}},
                              [route("reports", "/reports", timeout=5), route("all")])
    assert (await get(http, proxy.url + "/reports/big"))[0] == 200
    assert (await get(http, proxy.url + "/other"))[0] == 504


async def test_a_fallback_gets_the_route_timeout_anew(make_upstream, start_proxy, http):
    legacy, new = await make_upstream("legacy", slow), await make_upstream("new", slow)
    proxy = await start_proxy({"legacy": {"url": legacy.url, "timeout": 0.1}, "new": {"url": new.url, "timeout": 0.1}},
                              [route("orders", "/api", new="new", serve="new", fallback="legacy", timeout=1)])
    async with http.get(proxy.url + "/api/x?sleep=0.3") as response:
        assert (response.status, response.headers["X-Upstream"]) == (200, "new")
    async with http.get(proxy.url + "/api/x?sleep=1.5") as response:
        assert response.status == 504  # new timed out at 1 s, then legacy did too
    assert len(legacy.seen) == 1
