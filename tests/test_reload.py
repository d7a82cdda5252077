"""Editing routes.yaml moves traffic within 2 seconds; an invalid edit changes nothing and says why."""

import asyncio
import logging

import aiohttp

from tests.helpers import eventually, route


def orders(serve: str, **more) -> list[dict]:
    return [route("orders", "/api/orders", new="new", serve=serve, **more), route("all")]


async def served_by(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        assert response.status == 200
        return response.headers["X-Upstream"]


async def is_served_by(http: aiohttp.ClientSession, url: str, side: str) -> bool:
    return await served_by(http, url) == side


async def test_an_edit_moves_traffic_within_two_seconds(make_upstream, start_proxy, http):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, orders("legacy"))
    assert await served_by(http, proxy.url + "/api/orders/1") == "legacy"
    proxy.rewrite(ups, orders("new"))
    await eventually(lambda: is_served_by(http, proxy.url + "/api/orders/1", "new"), timeout=2.0,
                     what="the edit was not applied")


async def test_an_invalid_edit_keeps_the_last_good_config_and_says_why(make_upstream, start_proxy, http, caplog):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, orders("legacy"))
    good = proxy.path.read_text()
    proxy.path.write_text(good.replace("serve: legacy", "serve: sideways"))
    assert await proxy.proxy.reload("test") is False
    assert await served_by(http, proxy.url + "/api/orders/1") == "legacy"
    async with http.get(proxy.admin_url + "/status") as response:
        error = (await response.json())["config"]["last_reload_error"]
    line = good.splitlines().index("  serve: legacy") + 1
    assert error["problems"] == [f"{proxy.path}:{line}: route 'orders': 'serve' must be legacy or new or "
                                 "toggle, got 'sideways'"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in logged] == ["routes.yaml is invalid; still serving the last good configuration"]
    assert logged[0].problems == error["problems"]

    proxy.path.write_text(good.replace("serve: legacy", "serve: new"))
    assert await proxy.proxy.reload("test") is True
    async with http.get(proxy.admin_url + "/status") as response:
        assert (await response.json())["config"]["last_reload_error"] is None


async def test_reloads_under_continuous_load_fail_no_request(make_upstream, start_proxy):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, orders("legacy"))
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                async with session.get(proxy.url + "/api/orders/1") as response:
                    await response.read()
                    statuses.append(response.status)

    clients = [asyncio.create_task(client()) for _ in range(8)]
    variants = [
        (ups, orders("new")),
        ({"legacy": legacy.url, "new": {"url": new.url, "max_connections": 7}}, orders("new")),  # a new pool
        (ups, orders("legacy")),
        (ups, orders("sideways")),  # invalid: kept out
        ({"legacy": {"url": legacy.url, "timeout": 9}, "new": new.url}, orders("new")),
        (ups, [{"name": "broken"}]),  # invalid
    ] * 2
    for upstreams, routes in variants:
        proxy.rewrite(upstreams, routes)
        await proxy.proxy.reload("test")
        await asyncio.sleep(0.15)
    stop.set()
    await asyncio.gather(*clients)
    assert len(statuses) > 100
    assert set(statuses) == {200}
    assert len(legacy.seen) > 0 and len(new.seen) > 0


async def test_unchanged_upstreams_keep_their_pool_and_dropped_ones_close(make_upstream, start_proxy):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, orders("new"))
    before = proxy.proxy.live.current.pools
    proxy.rewrite({"legacy": legacy.url, "new": {"url": new.url, "timeout": 5}}, orders("new"))
    assert await proxy.proxy.reload("test")
    after = proxy.proxy.live.current.pools
    assert after["legacy"] is before["legacy"]
    assert after["new"] is not before["new"] and after["new"].spec.timeout == 5
    await asyncio.sleep(0)  # the retired pool had nothing in flight: it closes at once
    await asyncio.sleep(0)
    assert before["new"].closed and not after["legacy"].closed


async def test_an_edit_that_cannot_be_built_is_a_reload_error_and_the_next_edit_applies(make_upstream, start_proxy,
                                                                                         http):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, orders("legacy"))
    (proxy.path.parent / "plain").write_text("a file, where the edit wants a directory")
    cache = proxy.path.parent / "plain" / "cache"
    # valid as a file, but the Unleash provider's cache directory cannot be made under a regular file
    proxy.rewrite(ups, orders("new"), toggles={"provider": "unleash", "unleash": {
        "url": "http://127.0.0.1:9/api", "cache_directory": "plain/cache"}})

    async def reload_error():
        async with http.get(proxy.admin_url + "/status") as response:
            return (await response.json())["config"]["last_reload_error"]
    error = await eventually(reload_error, timeout=5)
    assert error["problems"] == [f"{proxy.path}: could not be loaded (NotADirectoryError: [Errno 20] "
                                 f"Not a directory: '{cache}')"]
    assert await served_by(http, proxy.url + "/api/orders/1") == "legacy"
    reloads = proxy.proxy.metrics.registry.get_sample_value
    assert reloads("strangler_config_reloads_total", {"result": "invalid"}) == 1

    proxy.rewrite(ups, orders("new"))  # the watcher is still there
    await eventually(lambda: _is(served_by(http, proxy.url + "/api/orders/1"), "new"), timeout=5)
    assert await reload_error() is None


async def _is(found, expected) -> bool:
    return await found == expected
