"""Rollout plans end to end: a route advances on parallel-run evidence, rolls back on its own, and
keeps its state across a restart. Real upstreams, a real proxy, a real SQLite file; gates set small."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import rollout
from tests.helpers import route

USERS = [f"user-{n}" for n in range(200)]


class Planted:
    """A new service that answers like legacy until told to diverge."""

    def __init__(self) -> None:
        self.diverging = False

    async def legacy(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"id": request.path.rsplit("/", 1)[1], "price": 10})

    async def new(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"id": request.path.rsplit("/", 1)[1], "price": 11 if self.diverging else 10})


def planned(steps: list[int], **plan: Any) -> dict[str, Any]:
    return route("items", "/api/items", new="new", serve="toggle",
                 toggle={"name": "items-to-new", "stickiness": "header:X-User-Id"},
                 parallel_run={"enabled": True}, rollout_plan={"steps": steps, "check_interval": 0.1, **plan})


SMALL_GATES = {
    "advance": {"min_comparisons": 20, "min_seconds": 0.3, "max_divergence_rate": 0.05, "max_error_rate": 0.05,
                "max_latency_ratio": None},
    "rollback": {"min_comparisons": 10, "window": 2, "max_divergence_rate": 0.2, "max_latency_ratio": None,
                 "to": "legacy"},
}


@pytest.fixture(autouse=True)
def quick_ticks(monkeypatch):
    monkeypatch.setattr(rollout, "TICK", 0.1)


async def traffic(url: str, served: dict[str, int], stop: asyncio.Event) -> None:
    """Users asking for items until stopped; `served` counts answers by the side that gave them."""
    async with aiohttp.ClientSession() as http:
        n = 0
        while not stop.is_set():
            user = USERS[n % len(USERS)]
            async with http.get(f"{url}/api/items/{n}", headers={"X-User-Id": user}) as response:
                assert response.status == 200
                side = response.headers["X-Upstream"]
                served[side] = served.get(side, 0) + 1
            n += 1


async def plan_status(proxy) -> dict[str, Any] | None:
    """The route's plan as /status shows it (None before its first judgement)."""
    async with aiohttp.ClientSession() as http, http.get(proxy.admin_url + "/status") as response:
        found = (await response.json())["rollouts"]
    return next((p for p in found if p["route"] == "items"), None)


async def wait_for(proxy, check, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (status := await plan_status(proxy)) is None or not check(status):
        assert time.monotonic() < deadline, f"{what}: still {status}"
        await asyncio.sleep(0.1)
    return status


async def test_a_right_service_advances_step_by_step_then_rolls_back_when_it_diverges(make_upstream, start_proxy,
                                                                                      tmp_path):
    planted = Planted()
    legacy, new = await make_upstream("legacy", planted.legacy), await make_upstream("new", planted.new)
    upstreams = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(upstreams, [planted_route := planned([0, 10, 50, 100], **SMALL_GATES)])
    served: dict[str, int] = {}
    stop = asyncio.Event()
    users = asyncio.create_task(traffic(proxy.url, served, stop))
    try:
        await wait_for(proxy, lambda s: s["percent"] == 100, 30, "advancing to 100%")
        served.clear()
        await asyncio.sleep(0.5)
        assert served.get("new", 0) > 0 and served.get("legacy", 0) == 0  # everyone on the new side
        planted.diverging = True
        rolled = await wait_for(proxy, lambda s: s["percent"] == 0, 15, "rolling back")
        served.clear()
        await asyncio.sleep(0.5)
        assert served.get("legacy", 0) > 0 and served.get("new", 0) == 0  # everyone back on legacy
    finally:
        stop.set()
        await users
    assert rolled["held"] and "divergence_rate" in rolled["hold_reason"]
    events = proxy.proxy.plans.events("items")[::-1]
    assert [(e["action"], e["from_percent"], e["to_percent"]) for e in events] == [
        ("start", 0, 0), ("advance", 0, 10), ("advance", 10, 50), ("advance", 50, 100), ("rollback", 100, 0)]
    assert all(e["evidence"]["step"]["compared"] >= 20 for e in events if e["action"] == "advance")
    assert "divergence_rate" in events[-1]["reason"]
    metrics = proxy.proxy.metrics.registry
    assert metrics.get_sample_value("strangler_rollout_moves_total", {"route": "items", "action": "advance"}) == 3
    assert metrics.get_sample_value("strangler_rollout_moves_total", {"route": "items", "action": "rollback"}) == 1
    assert metrics.get_sample_value("strangler_rollout_percent", {"route": "items"}) == 0

    await proxy.proxy.stop()  # the state outlives the process: a restart stays rolled back and held
    again = await start_proxy(upstreams, [planted_route])
    planted.diverging = False
    status = await wait_for(again, lambda s: True, 5, "the plan's state after a restart")
    assert (status["percent"], status["held"]) == (0, True)
