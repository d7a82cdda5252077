"""Against a real Unleash server (6.x on PostgreSQL): the split, a switch-off, an outage, a restart."""

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import uuid

import aiohttp
import pytest

from proxy.model import Stickiness, ToggleSpec, Verdict
from reports import timeline
from tests.helpers import REPO, eventually, route, routes_yaml
from tests.servers import Unleash, install_unleash
from toggles.unleash import UnleashToggles

# PostgreSQL and unleash-server are outside programs (`-m "not external"` leaves these out), installed and
# started on first use: the first test here may spend minutes on that before its own work.
pytestmark = [pytest.mark.external, pytest.mark.timeout(600)]

REFRESH = 1  # seconds between polls of the server
USERS = [f"user-{n}" for n in range(400)]


@pytest.fixture(scope="session")
def unleash(postgres):
    install_unleash()
    server = Unleash(postgres)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def feature(unleash) -> str:
    return f"orders-to-new-{uuid.uuid4().hex[:8]}"  # each test its own feature


@pytest.fixture
def server_toggles(unleash, feature, tmp_path, monkeypatch):
    """The `toggles:` block of a routes.yaml pointing at the test server, with a client token."""
    monkeypatch.setenv("TEST_UNLEASH_TOKEN", unleash.client_token())
    return {"provider": "unleash", "unleash": {
        "url": unleash.api_url, "app_name": "strangler-tests", "environment": "development",
        "token_env": "TEST_UNLEASH_TOKEN", "refresh_interval": REFRESH, "cache_directory": str(tmp_path / "cache")}}


def toggled(feature: str) -> list[dict]:
    return [route("orders", "/api/orders", new="new", serve="toggle",
                  toggle={"name": feature, "stickiness": "header:X-User-Id"}), route("all")]


async def sides(url: str, users: list[str]) -> dict[str, str]:
    async with aiohttp.ClientSession() as http:
        async def one(user: str) -> tuple[str, str]:
            async with http.get(url + "/api/orders/1", headers={"X-User-Id": user}) as response:
                return user, response.headers["X-Upstream"]
        return dict(await asyncio.gather(*(one(u) for u in users)))


async def all_sides(url: str, users: list[str], expected: set[str]) -> bool:
    """Whether the users' requests, together, were answered by just the `expected` sides."""
    return set((await sides(url, users)).values()) == expected


async def synced(proxy, feature: str, timeout: float = 15) -> dict:
    """Wait until the proxy's /status shows the feature's definition from the server."""
    seen: dict = {}
    async with aiohttp.ClientSession() as http:
        async def defined() -> dict | None:
            async with http.get(proxy.admin_url + "/status") as response:
                seen.update((await response.json())["toggles"])
            return seen if seen["routes"][0]["definition"] is not None else None
        return await eventually(defined, timeout, interval=0.1,
                                what=lambda: f"the proxy never saw feature {feature}: {seen}")


async def started(make_upstream, start_proxy, feature, server_toggles):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, toggled(feature), toggles=server_toggles)
    return proxy, await synced(proxy, feature)


async def test_half_of_400_users_reach_the_new_service_and_each_one_sticks(
        unleash, feature, server_toggles, make_upstream, start_proxy):
    unleash.rollout(feature, 50)
    proxy, status = await started(make_upstream, start_proxy, feature, server_toggles)
    assert status["provider"] == "unleash" and status["synced"] and status["last_sync"]
    first = await sides(proxy.url, USERS)
    on = {user for user, side in first.items() if side == "new"}
    assert 160 <= len(on) <= 240  # 40-60%
    assert await sides(proxy.url, USERS) == first
    local = UnleashToggles.local([ToggleSpec(feature, 50, Stickiness("header", "X-User-Id"))])
    assert {u for u in USERS if local.verdict(feature, {"userId": u}) is Verdict.ON} == on  # one hash everywhere


async def test_switching_off_in_unleash_reaches_routing_within_the_refresh_interval_and_a_second(
        unleash, feature, server_toggles, make_upstream, start_proxy):
    unleash.rollout(feature, 100)
    proxy, _ = await started(make_upstream, start_proxy, feature, server_toggles)
    assert set((await sides(proxy.url, USERS[:50])).values()) == {"new"}
    unleash.switch(feature, False)
    await eventually(lambda: all_sides(proxy.url, USERS[:50], {"legacy"}), timeout=REFRESH + 1,
                     what="the switch-off did not reach routing in time")


async def test_an_outage_and_a_restart_keep_routing_on_the_last_known_state(
        unleash, feature, server_toggles, make_upstream, start_proxy):
    unleash.rollout(feature, 50)
    proxy, _ = await started(make_upstream, start_proxy, feature, server_toggles)
    before = await sides(proxy.url, USERS)
    unleash.stop()
    try:
        await asyncio.sleep(3 * REFRESH)  # several failed polls
        assert await sides(proxy.url, USERS) == before
        await proxy.proxy.stop()
        restarted = await start_proxy({n: u.url for n, u in _upstreams(proxy).items()}, toggled(feature),
                                      toggles=server_toggles)  # the server is still down
        assert await sides(restarted.url, USERS) == before
    finally:
        unleash.start()


def _upstreams(proxy):
    return {name: pool.spec for name, pool in proxy.proxy.live.current.pools.items()}


def test_explain_asks_the_real_server(unleash, feature, server_toggles, tmp_path):
    unleash.rollout(feature, 100)
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml({"legacy": "http://127.0.0.1:9", "new": "http://127.0.0.1:10"}, toggled(feature),
                                toggles=server_toggles))
    result: dict = {}

    def explained_new() -> bool:
        done = subprocess.run([sys.executable, "-m", "proxy", "explain", "GET", "/api/orders/1", "-H",
                               "X-User-Id: alice", "--format", "json", "--config", str(path)],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        result.update(json.loads(done.stdout))
        return result["serve"] == "new"
    # the server's client API caches its answer for a moment: a new strategy shows up shortly
    asyncio.run(eventually(explained_new, timeout=30, interval=0.5, what=lambda: f"explain said {result}"))
    assert (result["serve"], result["toggle"]) == ("new", {
        "name": feature, "provider": "unleash", "stickiness": "header:X-User-Id", "sticky_value": "alice",
        "verdict": "on", "plan_percent": None})


def unleash_rollout(unleash, feature: str, environment: str = "development") -> str | None:
    """The feature's flexibleRollout percent in Unleash (None: no such feature or strategy yet)."""
    try:
        strategies = unleash.call("GET", f"/api/admin/projects/default/features/{feature}/environments/"
                                         f"{environment}/strategies")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return next((s["parameters"]["rollout"] for s in strategies if s["name"] == "flexibleRollout"), None)


async def test_a_rollout_plan_writes_its_step_to_unleash_and_routing_follows_the_server(
        unleash, feature, server_toggles, make_upstream, start_proxy, monkeypatch):
    from proxy.rollout import plans as rollout

    monkeypatch.setattr(rollout, "TICK", 0.1)
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    plan = {"steps": [0, 50], "check_interval": 0.1,
            "advance": {"min_comparisons": 20, "min_seconds": 0.3, "max_latency_ratio": None},
            "rollback": {"max_latency_ratio": None}}
    planned = [route("orders", "/api/orders", new="new", serve="toggle", parallel_run={"enabled": True},
                     toggle={"name": feature, "stickiness": "header:X-User-Id"}, rollout_plan=plan), route("all")]
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, planned, toggles=server_toggles)
    deadline = time.monotonic() + 20  # for all three steps

    def left() -> float:
        return deadline - time.monotonic()

    async def advanced() -> bool:  # evidence comes in; the plan advances and writes it
        if unleash_rollout(unleash, feature) == "50":
            return True
        await sides(proxy.url, USERS[:40])
        return False

    async def followed() -> bool:
        return len([s for s in (await sides(proxy.url, USERS)).values() if s == "new"]) in range(160, 241)
    await eventually(lambda: unleash_rollout(unleash, feature) == "0", left(), interval=0.1,
                     what="the plan never wrote its first step")  # the plan starts by writing where it stands
    await eventually(advanced, left(), interval=0, what="the plan never advanced in Unleash")
    await eventually(followed, left(), interval=0.2, what="routing never followed the server's rollout")
    events = timeline.plan_timeline([proxy.proxy.store.where], "orders").events
    assert events[-1]["action"] == "advance" and events[-1]["to_percent"] == 50


async def test_a_fleet_on_one_store_follows_its_plan_in_unleash_within_a_check_and_a_second(
        unleash, feature, server_toggles, make_upstream, pg_store, tmp_path):
    """Two `strangler serve` processes, one PostgreSQL store, the unleash provider polling only every
    30 s: each instance routes by each step within check_interval plus a second of the move."""
    from tests.test_fleet import CHECK_INTERVAL, Host, send, start_all

    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    toggles = {**server_toggles, "unleash": {**server_toggles["unleash"], "refresh_interval": 30}}
    plan = {"steps": [0, 50, 100], "check_interval": CHECK_INTERVAL,
            "advance": {"min_comparisons": 20, "min_seconds": 0.3, "max_latency_ratio": None},
            "rollback": {"max_latency_ratio": None}}
    hosts = [Host(tmp_path, name) for name in ("host1", "host2")]
    for host in hosts:
        host.write({"legacy": legacy.url, "new": new.url}, [route(
            "items", "/api/items", new="new", serve="toggle", parallel_run={"enabled": True},
            toggle={"name": feature, "stickiness": "header:X-User-Id"}, rollout_plan=plan)], pg_store, toggles=toggles)
    await start_all(hosts)
    seen: list[tuple[float, int | None, int | None]] = []  # when, and the rollout each instance routes by
    failures: list[str] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            found = await asyncio.gather(*(asyncio.to_thread(_routed_rollout, host) for host in hosts))
            seen.append((time.time(), *found))
            await asyncio.sleep(0.1)

    async def users() -> None:
        while not stop.is_set():
            await send([h.url for h in hosts], 20, failures)
    tasks = [asyncio.create_task(watch()), asyncio.create_task(users())]
    try:
        await eventually(lambda: seen and seen[-1][1:] == (100, 100), timeout=90, interval=0.2,
                         what=lambda: f"both instances routing at 100%, as sampled: {seen[-1:]}")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.gather(*(asyncio.to_thread(host.stop) for host in hosts))
    assert failures == []
    events = timeline.plan_timeline([pg_store], "items").events
    assert [(e["action"], e["to_percent"]) for e in events] == [("start", 0), ("advance", 50), ("advance", 100)]
    for move in events[1:]:
        due = move["at"] + CHECK_INTERVAL + 1.0 + 0.2  # 0.2: this test's own sampling
        for index in (1, 2):
            shown = next((at for at, *rollouts in seen if at >= move["at"] and rollouts[index - 1] is not None
                          and rollouts[index - 1] >= move["to_percent"]), None)
            assert shown is not None and shown <= due, (
                f"instance {index} routed by {move['to_percent']}% {None if shown is None else shown - move['at']:.2} s"
                f" after the move")


def _routed_rollout(host) -> int | None:
    """The flexibleRollout percent an instance's Unleash SDK evaluates the route's toggle by."""
    [toggle] = host.status()["toggles"]["routes"]
    strategies = (toggle["definition"] or {}).get("strategies", [])
    return next((int(s["parameters"]["rollout"]) for s in strategies if s["name"] == "flexibleRollout"), None)
