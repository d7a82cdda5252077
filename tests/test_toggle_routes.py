"""`serve: toggle` routes through the running proxy: the split, stickiness, edits, /status, metrics."""

import asyncio
import logging
from functools import partial

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import eventually, free_port, route


def toggled(rollout: int | None, stickiness: str = "header:X-User-Id") -> list[dict]:
    toggle = {"name": "orders-to-new", "stickiness": stickiness}
    if rollout is not None:
        toggle["rollout"] = rollout
    return [route("orders", "/api/orders", new="new", serve="toggle", toggle=toggle), route("all")]


async def sides(http: aiohttp.ClientSession, url: str, users: list[str]) -> dict[str, str]:
    async def one(user: str) -> tuple[str, str]:
        async with http.get(url + "/api/orders/1", headers={"X-User-Id": user}) as response:
            assert response.status == 200
            return user, response.headers["X-Upstream"]
    return dict(await asyncio.gather(*(one(u) for u in users)))


async def sides_are(http: aiohttp.ClientSession, url: str, users: list[str], expected: set[str]) -> bool:
    """Whether the users' requests, together, were answered by just the `expected` sides."""
    return set((await sides(http, url, users)).values()) == expected


async def test_half_the_users_go_to_new_and_each_one_stays(make_upstream, start_proxy, http):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, toggled(50))
    users = [f"user-{n}" for n in range(200)]
    first = await sides(http, proxy.url, users)
    assert 80 <= list(first.values()).count("new") <= 120
    assert await sides(http, proxy.url, users) == first
    seen = new.seen[0]
    assert seen.header("X-User-Id") in users  # the stickiness header still reaches the upstream


async def test_without_a_sticky_value_the_monolith_answers(make_upstream, start_proxy, http):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, toggled(100))
    async with http.get(proxy.url + "/api/orders/1") as response:
        assert response.headers["X-Upstream"] == "legacy"


async def test_moving_a_route_from_0_to_100_percent_by_editing_rollout(make_upstream, start_proxy, http):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, toggled(0))
    users = [f"user-{n}" for n in range(50)]
    assert set((await sides(http, proxy.url, users)).values()) == {"legacy"}
    for rollout, expected in ((50, {"legacy", "new"}), (100, {"new"})):
        proxy.rewrite(ups, toggled(rollout))
        await eventually(partial(sides_are, http, proxy.url, users, expected), timeout=2.0,
                         what=f"rollout {rollout} was not applied")


async def test_status_shows_each_toggle_route_and_its_definition(make_upstream, start_proxy, http):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, toggled(25))
    async with http.get(proxy.admin_url + "/status") as response:
        toggles = (await response.json())["toggles"]
    assert toggles == {"provider": "local", "url": None, "synced": True, "last_sync": None, "routes": [{
        "route": "orders", "toggle": "orders-to-new", "serve": "toggle", "stickiness": "header:X-User-Id",
        "definition": {"name": "orders-to-new", "type": "release", "enabled": True, "strategies": [{
            "name": "flexibleRollout",
            "parameters": {"rollout": "25", "stickiness": "userId", "groupId": "orders-to-new"}}]}}]}


async def test_an_unreachable_unleash_server_means_legacy_counted_and_logged_once(
        make_upstream, start_proxy, http, tmp_path, caplog):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, toggled(None), toggles={
        "provider": "unleash", "unleash": {"url": f"http://127.0.0.1:{free_port()}/api", "refresh_interval": 1,
                                           "cache_directory": str(tmp_path / "cache")}})
    for user in ("a", "b", "c"):
        async with http.get(proxy.url + "/api/orders/1", headers={"X-User-Id": user}) as response:
            assert response.headers["X-Upstream"] == "legacy"
    async with http.get(proxy.admin_url + "/metrics") as response:
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    verdicts = {s.labels["verdict"]: s.value for s in families["strangler_toggle_verdicts"].samples
                if s.name.endswith("_total")}
    assert verdicts == {"not_synced": 3.0}
    warned = [r for r in caplog.records if r.name == "strangler.toggles" and r.levelno == logging.WARNING]
    assert [(r.toggle, r.verdict) for r in warned] == [("orders-to-new", "not_synced")]
